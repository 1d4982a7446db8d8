"""Gaussian PSF images and their widths, for the PSF-reading tests (test_psf_scale,
test_psfex)."""

from __future__ import annotations

import math

import numpy as np


def gaussian_psf(n: int, fwhm: float) -> np.ndarray:
    """(n, n) unit-sum circular Gaussian of ``fwhm`` pixels centred on pixel (n // 2, n // 2)."""
    yy, xx = np.indices((n, n)) - n // 2
    p = np.exp(-(xx ** 2 + yy ** 2) / (2 * (fwhm / 2.3548) ** 2))
    return p / p.sum()


def moment_fwhm(psf: np.ndarray, oversampling: int = 1) -> float:
    """FWHM in image pixels of a Gaussian PSF sampled ``oversampling`` times per pixel, from its
    second moment about the centre pixel (exact for a Gaussian, unlike a half-maximum area)."""
    yy, xx = np.indices(psf.shape)
    var = (psf * ((xx - psf.shape[1] // 2) ** 2 + (yy - psf.shape[0] // 2) ** 2)).sum() / psf.sum() / 2
    return 2.3548 * math.sqrt(var) / oversampling
