"""A PSF sampled at another pixel scale than its image, brought onto the image's grid.

Survey-average and empirical PSFs are often built on a finer grid than the images they serve
(Abdurro'uf et al.'s stacked SDSS PSFs: 0.25"/px for 0.396"/px images); used as if sampled at
the image's scale, such a PSF is 1.6x too wide and every size and index fitted with it is
wrong.  When the PSF file's header states its pixel scale (``PIXSCALE``, ... or a celestial WCS)
and the image's is known, :func:`match_psf_scale` returns the PSF sampled at an integer
fraction of the image's pixel:

* a scale ratio (image / PSF) within 1 % of an integer k: the PSF is used as it is, with
  oversampling k (1 is the plain case);
* otherwise the PSF is resampled (Lanczos-3, separable, about its centre pixel ``(h // 2,
  w // 2)``, the renderer's convention) onto a grid of ``image scale / k``, k = ceil(ratio), at
  least as fine as its own, so nothing it resolves is lost, and renormalised to unit sum.

Whether the PSF includes the pixel response (``psf_includes_pixel``) is unchanged by
resampling: an effective PSF stays one, sampled more or less finely.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["lanczos_matrix", "resample_psf", "match_psf_scale", "SCALE_TOLERANCE"]

#: Relative mismatch of the pixel scales below which nothing is resampled.
SCALE_TOLERANCE = 0.01


def _lanczos(x: np.ndarray, a: int = 3) -> np.ndarray:
    x = np.asarray(x, float)
    out = np.sinc(x) * np.sinc(x / a)
    return np.where(np.abs(x) < a, out, 0.0)


def lanczos_matrix(n_in: int, n_out: int, step: float, a: int = 3) -> np.ndarray:
    """(n_out, n_in) interpolation weights: output sample j lies at input coordinate
    ``n_in // 2 + (j - n_out // 2) * step`` (input pixels); Lanczos-``a`` kernel, each row
    summing to 1 (so a constant stays constant)."""
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"step must be finite and > 0 input pixels, got {step}")
    u = n_in // 2 + (np.arange(n_out) - n_out // 2) * float(step)
    w = _lanczos(u[:, None] - np.arange(n_in)[None, :], a)
    s = w.sum(axis=1, keepdims=True)
    return np.divide(w, s, out=np.zeros_like(w), where=np.abs(s) > 1e-12)


def resample_psf(psf: np.ndarray, step: float) -> np.ndarray:
    """``psf`` (h, w) resampled at ``step`` of its own pixels (< 1: finer), same centre pixel
    convention and angular extent (odd output sides), unit sum."""
    psf = np.asarray(psf, float)
    h, w = psf.shape
    ny = 2 * int(math.floor((h // 2) / step)) + 1
    nx = 2 * int(math.floor((w // 2) / step)) + 1
    out = lanczos_matrix(h, ny, step) @ psf @ lanczos_matrix(w, nx, step).T
    total = out.sum()
    if not total > 0:
        raise ValueError(f"resampled PSF sums to {total:g}")
    return out / total


def match_psf_scale(psf: np.ndarray, psf_scale: float | None, image_scale: float | None,
                    oversampling=1, unit: str = '"') -> tuple[np.ndarray, int, str | None]:
    """(psf, oversampling, note) with the PSF sampled at ``image_scale / oversampling``.

    ``psf_scale``, ``image_scale``: the spacing of the PSF's samples and of the image's pixels,
    in one unit (arcsec per pixel; or image pixels, the image's being 1, for a PSFEx model's
    ``PSF_SAMP``), None: unknown, nothing is done.  ``oversampling`` other than 1 was chosen by
    the caller and is kept as given.  ``note`` says what was done (None when nothing was), with
    ``unit`` after the numbers.
    """
    # the caller's oversampling is returned as given: the Cutout validates it (2.5 is refused)
    if psf_scale is None or image_scale is None or oversampling != 1:
        return psf, oversampling, None
    if not (psf_scale > 0 and image_scale > 0 and math.isfinite(psf_scale) and math.isfinite(image_scale)):
        return psf, oversampling, None
    ratio = image_scale / psf_scale
    k = max(1, round(ratio))
    if abs(ratio - k) <= SCALE_TOLERANCE * ratio:
        if k == 1:
            return psf, 1, None
        return psf, k, (f"PSF sampled every {psf_scale:g}{unit}, used with oversampling {k} of "
                        f"the image's {image_scale:g}{unit} pixels")
    k = max(1, math.ceil(ratio))
    step = image_scale / k / psf_scale     # new spacing in the PSF's own pixels
    out = resample_psf(psf, step)
    return out, k, (f"PSF sampled every {psf_scale:g}{unit} resampled to every {image_scale / k:.4g}{unit} "
                    f"(oversampling {k} of the image's {image_scale:g}{unit} pixels)")
