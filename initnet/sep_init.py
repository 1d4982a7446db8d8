"""``--init sep``: starting values from sep moments and apertures of the central object.

* centre: the isophotal barycentre;
* magnitude: Kron flux (2.5 Kron radii, at least 3.5 px, contaminants masked), divided by the
  fraction of a Sérsic profile's light inside that aperture;
* q, pa: from the second moments, with the PSF's second moment removed in quadrature;
* n: from the concentration R90 / R50 (radii enclosing 90 % and 50 % of the Kron flux) through
  the exact Sérsic curve of growth truncated at 2.5 Kron radii;
* r_e: circular radius enclosing half the Kron flux, scaled to half the total flux for that n,
  PSF half-light radius removed in quadrature, converted to the major axis with ``r / sqrt(q)``.

All conversions to catalog conventions happen in :mod:`galmoss_auto.initnet.conventions`.
"""

from __future__ import annotations

import numpy as np
import sep

from galmoss_auto.automask.detect import DetectConfig, detect
from galmoss_auto.automask.sep_masker import contaminant_mask
from galmoss_auto.fitting.flags import Flag
from galmoss_auto.initnet.base import InitResult, fallback_guess
from galmoss_auto.initnet.conventions import (fits_position, kron_corrections, mag_from_flux,
                                              n_from_kron_concentration, pa_from_sep_theta,
                                              q_from_sep_axes, r_e_major_from_circular)

__all__ = ["SepInitializer", "psf_moments"]


def psf_moments(psf: np.ndarray) -> tuple[float, float]:
    """(second moment sigma^2 per axis, circular half-light radius) of a PSF image, pixels."""
    h, w = psf.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    p = np.clip(psf, 0, None)
    p = p / p.sum()
    cy, cx = (p * yy).sum(), (p * xx).sum()
    var = 0.5 * ((p * (yy - cy) ** 2).sum() + (p * (xx - cx) ** 2).sum())
    r = np.hypot(yy - cy, xx - cx).ravel()
    order = np.argsort(r)
    cum = np.cumsum(p.ravel()[order])
    r50 = float(r[order][np.searchsorted(cum, 0.5)])
    return float(var), max(r50, 0.5)


class SepInitializer:
    """Moment/aperture starting values.  ``detect``: the sep settings when no detection is
    handed over by the masker."""

    name = "sep"

    def __init__(self, detect: DetectConfig | None = None):
        self.detect_config = detect or DetectConfig()

    def __call__(self, cutout, detection=None) -> InitResult:
        # detect() subtracts the measured sky (cutout.meta["sky"]): det.data is sky-free
        det = detection if detection is not None else detect(
            cutout.image, cutout.sigma, cutout.mask, self.detect_config,
            cutout.meta.get("sky"))
        if det.central < 0:
            return InitResult(fallback_guess(cutout),
                              int(Flag.INIT_FALLBACK | Flag.NO_CENTRAL_DETECTION),
                              {"init_method": "fallback"})
        obj = det.objects[det.central]
        h, w = det.data.shape
        ap_mask = (det.bad | cutout.mask
                   | contaminant_mask(det.segmap, det.objects, det.central, dilate=1))
        x0, y0 = float(obj["x"]), float(obj["y"])
        a, b, theta = max(float(obj["a"]), 0.5), max(float(obj["b"]), 0.5), float(obj["theta"])
        xs, ys = np.array([x0]), np.array([y0])
        kron, _ = sep.kron_radius(det.data, xs, ys, np.array([a]), np.array([b]), np.array([theta]),
                                  6.0, mask=ap_mask)
        r_kron = max(2.5 * float(kron[0]), 3.5 / np.sqrt(a * b))  # SExtractor's minimum aperture
        flux, _, _ = sep.sum_ellipse(det.data, xs, ys, np.array([a]), np.array([b]),
                                     np.array([theta]), np.array([r_kron]), mask=ap_mask, subpix=5)
        flux = float(flux[0])
        if not flux > 0:
            flux = float(obj["flux"])
        if not flux > 0:
            return InitResult(fallback_guess(cutout), int(Flag.INIT_FALLBACK),
                              {"init_method": "fallback"})
        rmax = np.array([max(r_kron * a, 3.0, 0.5 * max(h, w))])
        radii, _ = sep.flux_radius(det.data, xs, ys, rmax, [0.5, 0.9], normflux=np.array([flux]),
                                   mask=ap_mask, subpix=5)
        r50, r90 = float(radii[0][0]), float(radii[0][1])
        psf_var, psf_r50 = psf_moments(cutout.psf) if cutout.psf is not None else (0.0, 0.0)
        # Remove the PSF in quadrature (exact for Gaussians, a fair start otherwise).
        a_i = np.sqrt(max(a * a - psf_var, 0.25 * a * a, 0.09))
        b_i = np.sqrt(max(b * b - psf_var, 0.25 * b * b, 0.09))
        q = float(q_from_sep_axes(a_i, b_i))
        conc = r90 / r50 if r50 > 0 else np.nan
        # Radii and concentration are relative to the Kron flux; the Sérsic curve of growth
        # truncated at 2.5 Kron radii turns them into n, total flux and r_e.
        n = float(np.clip(n_from_kron_concentration(conc), 0.3, 6.0)) if np.isfinite(conc) else 1.0
        frac, half_ratio = kron_corrections(n)
        total = flux / float(frac)
        r50_true = r50 / float(half_ratio)
        # Remove the PSF in quadrature (exact for Gaussians, a fair start otherwise).
        r50_i = np.sqrt(max(r50_true ** 2 - psf_r50 ** 2, 0.25 * r50_true ** 2, 0.25))
        x, y = fits_position(x0, y0)
        params = {"x": float(x), "y": float(y), "mag": float(mag_from_flux(total, cutout.zeropoint)),
                  "r_e": float(np.clip(r_e_major_from_circular(r50_i, q), 0.5, max(h, w))),
                  "n": n, "q": q, "pa": float(pa_from_sep_theta(theta))}
        columns = {"init_concentration": float(conc), "init_kron_flux": flux, "init_method": "sep"}
        # a start from a detection below MIN_CENTRAL_SNR is kept, but not taken for a galaxy
        return InitResult(params, 0 if det.central_detected else int(Flag.NO_CENTRAL_DETECTION),
                          columns)
