"""Conversions between the catalog's (GALFIT's) conventions and the peers' and GalSim's.

Catalog conventions (see the project README): x, y are 1-based FITS pixel coordinates (the
centre of array element [0, 0] is (1.0, 1.0); x runs along columns); ``mag = zp - 2.5 log10(F)``
with F the total flux in image units; ``r_e`` the half-light radius along the MAJOR axis in
pixels; ``q = b/a`` in (0, 1]; ``pa`` in degrees counter-clockwise from +y, in (-90, 90].

Each peer's convention, as read in its source (and proved on a bright galaxy by
``benchmarks/check_conventions.py``):

* GalSim: ``shear(q, beta)`` with beta counter-clockwise from +x, so ``pa = beta - 90``;
  ``half_light_radius`` is circularised: ``r_e = hlr / sqrt(q)``; image coordinates are 1-based.
* GalMOSS 2.2: pixel j (0-based column) has grid coordinate j + 0.5, so ``cen_x = x - 0.5``,
  ``cen_y = y - 0.5``; ``pa`` in degrees, same zero-point and direction as GALFIT; ``eff_r``
  along the major axis; ``mag`` total with ``M0`` = zeropoint.
* AstroPhot 0.18 (pixelscale 1, default WCS): the centre of pixel [0, 0] is at (0, 0), so
  ``center = (x - 1, y - 1)``; ``PA`` in radians in [0, pi), counter-clockwise from +y;
  ``Re`` along the major axis; ``Ie`` surface brightness at ``Re`` per pixel area.
* PyImfit / Imfit: X0, Y0 1-based like FITS; ``PA`` degrees CCW from +y; ``ell = 1 - q``;
  ``r_e`` along the major axis; ``I_e`` surface brightness at ``r_e`` (counts per pixel).
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaincinv, gammaln

__all__ = ["sersic_bn", "sersic_total_flux", "sersic_ie", "mag_from_flux", "flux_from_mag",
           "wrap_pa", "pa_from_galsim_beta", "galsim_beta_from_pa", "r_e_from_galsim_hlr",
           "galsim_hlr_from_r_e", "galmoss_center", "center_from_galmoss",
           "astrophot_center", "center_from_astrophot", "astrophot_pa", "pa_from_astrophot",
           "imfit_ell", "q_from_imfit_ell", "delta_pa"]


def sersic_bn(n):
    """Exact Sérsic b_n, solving P(2n, b_n) = 1/2 (n > 0, dimensionless)."""
    n = np.asarray(n, dtype=np.float64)
    if np.any(n <= 0):
        raise ValueError(f"Sérsic index must be > 0 (lower bound 0), got min {n.min()}")
    return gammaincinv(2.0 * n, 0.5)


def sersic_total_flux(i_e, r_e, n, q):
    """Total flux of an elliptical Sérsic profile with surface brightness ``i_e`` at the
    major-axis half-light radius ``r_e`` (pixels) and axis ratio ``q`` in (0, 1]:
    ``F = 2 pi q r_e^2 I_e n e^{b_n} Gamma(2n) / b_n^{2n}`` (flux units of ``i_e`` x pixel^2)."""
    n = np.asarray(n, dtype=np.float64)
    b = sersic_bn(n)
    log_f = (np.log(2.0 * np.pi * np.asarray(q) * np.asarray(r_e) ** 2 * np.asarray(i_e) * n)
             + b + gammaln(2.0 * n) - 2.0 * n * np.log(b))
    return np.exp(log_f)


def sersic_ie(flux, r_e, n, q):
    """Inverse of :func:`sersic_total_flux`: surface brightness at r_e (flux / pixel^2)."""
    return np.asarray(flux, dtype=np.float64) / sersic_total_flux(1.0, r_e, n, q)


def mag_from_flux(flux, zeropoint: float):
    """``zeropoint - 2.5 log10(flux)``; NaN where flux <= 0 or not finite."""
    flux = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, zeropoint - 2.5 * np.log10(flux), np.nan)


def flux_from_mag(mag, zeropoint: float):
    """Total flux in image units from a magnitude: ``10^(-0.4 (mag - zeropoint))``."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=np.float64) - zeropoint))


def wrap_pa(pa_deg):
    """Wrap a position angle (degrees; an axis, so modulo 180) into (-90, 90]."""
    pa = np.mod(np.asarray(pa_deg, dtype=np.float64) + 90.0, 180.0) - 90.0   # [-90, 90)
    return np.where(pa == -90.0, 90.0, pa)


def delta_pa(pa_fit, pa_true):
    """Smallest signed difference between two axes, degrees, in (-90, 90]."""
    return wrap_pa(np.asarray(pa_fit, dtype=np.float64) - np.asarray(pa_true, dtype=np.float64))


def pa_from_galsim_beta(beta_deg):
    """GALFIT pa from GalSim's shear angle beta (degrees CCW from +x): ``pa = beta - 90``."""
    return wrap_pa(np.asarray(beta_deg, dtype=np.float64) - 90.0)


def galsim_beta_from_pa(pa_deg):
    """GalSim's beta (degrees CCW from +x) for a GALFIT pa: ``beta = pa + 90``."""
    return np.asarray(pa_deg, dtype=np.float64) + 90.0


def r_e_from_galsim_hlr(hlr, q):
    """Major-axis r_e from GalSim's circularised half-light radius (area-preserving shear)."""
    return np.asarray(hlr, dtype=np.float64) / np.sqrt(np.asarray(q, dtype=np.float64))


def galsim_hlr_from_r_e(r_e, q):
    """GalSim's circularised half-light radius for a major-axis r_e: ``hlr = r_e sqrt(q)``."""
    return np.asarray(r_e, dtype=np.float64) * np.sqrt(np.asarray(q, dtype=np.float64))


def galmoss_center(x, y):
    """GalMOSS ``(cen_x, cen_y)`` for catalog (x, y): its pixel j is centred on j + 0.5."""
    return np.asarray(x, dtype=np.float64) - 0.5, np.asarray(y, dtype=np.float64) - 0.5


def center_from_galmoss(cen_x, cen_y):
    """Catalog (x, y) from GalMOSS ``(cen_x, cen_y)``."""
    return np.asarray(cen_x, dtype=np.float64) + 0.5, np.asarray(cen_y, dtype=np.float64) + 0.5


def astrophot_center(x, y):
    """AstroPhot ``center`` (pixelscale 1, crpix 0): pixel [0, 0] is centred on (0, 0)."""
    return np.asarray(x, dtype=np.float64) - 1.0, np.asarray(y, dtype=np.float64) - 1.0


def center_from_astrophot(cx, cy):
    """Catalog (x, y) from an AstroPhot centre (pixelscale 1, crpix 0)."""
    return np.asarray(cx, dtype=np.float64) + 1.0, np.asarray(cy, dtype=np.float64) + 1.0


def astrophot_pa(pa_deg):
    """AstroPhot ``PA`` (radians in [0, pi), CCW from +y) from a GALFIT pa in degrees."""
    return np.mod(np.radians(np.asarray(pa_deg, dtype=np.float64)), np.pi)


def pa_from_astrophot(pa_rad):
    """GALFIT pa (degrees, (-90, 90]) from AstroPhot's ``PA`` in radians."""
    return wrap_pa(np.degrees(np.asarray(pa_rad, dtype=np.float64)))


def imfit_ell(q):
    """Imfit ellipticity ``ell = 1 - b/a`` from q = b/a."""
    return 1.0 - np.asarray(q, dtype=np.float64)


def q_from_imfit_ell(ell):
    """q = b/a from Imfit's ellipticity ``ell = 1 - b/a``."""
    return 1.0 - np.asarray(ell, dtype=np.float64)
