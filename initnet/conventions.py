"""The one place where sep's measurements become the catalog's (GALFIT's) conventions.

sep (like SExtractor) reports 0-based array positions, moment ellipses (``a``, ``b`` = RMS
extent along the major/minor axes, ``theta`` in radians counter-clockwise from the array's
+x axis, x = columns) and circular-aperture radii.  The catalog wants 1-based FITS pixel
positions, ``q = b/a`` in (0, 1], ``pa`` in degrees counter-clockwise from +y in (-90, 90],
``r_e`` along the major axis in pixels, total magnitudes, and a Sérsic index ``n``.

The Sérsic index comes from the concentration ``C = R90 / R50`` (radii enclosing 90 % and
50 % of the flux), inverted through the exact Sérsic curve of growth
``L(<R) / L_tot = P(2n, b_n (R / r_e)^(1/n))`` with ``P`` the regularised lower incomplete
gamma function and ``b_n`` defined by ``P(2n, b_n) = 1/2``.  ``C`` rises monotonically from
1.51 (n = 0.2) through 2.32 (n = 1) and 5.55 (n = 4) to 11.6 (n = 8).
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["N_MIN", "N_MAX", "Q_MIN", "sersic_radius_fraction", "concentration_from_n",
           "n_from_concentration", "kron_fraction", "kron_concentration_from_n",
           "n_from_kron_concentration", "kron_half_radius_ratio", "kron_corrections", "pa_from_sep_theta", "q_from_sep_axes",
           "r_e_major_from_circular", "mag_from_flux", "fits_position"]

#: Range of Sérsic indices the concentration table covers; inversions are clipped to it.
N_MIN, N_MAX = 0.2, 8.0
#: Smallest axis ratio returned by :func:`q_from_sep_axes` (the fitter's lower bound region).
Q_MIN = 0.05


def _gammaincinv(a: torch.Tensor, p: float, iters: int = 80) -> torch.Tensor:
    """Inverse of the regularised lower incomplete gamma function in x, for p in (0, 1).

    torch has ``gammainc`` but no inverse; bisection on a bracket that always holds
    (x in [0, a + 40 sqrt(a) + 40]) converges to double precision in ~60 halvings.
    """
    lo = torch.zeros_like(a)
    hi = a + 40.0 * torch.sqrt(a) + 40.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        below = torch.special.gammainc(a, mid) < p
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


def sersic_radius_fraction(n, frac: float) -> np.ndarray:
    """Radius enclosing the fraction ``frac`` (0 < frac < 1) of a Sérsic profile's flux, in
    units of its half-light radius ``r_e``: ``(x_f / b_n)^n`` with ``P(2n, x_f) = frac``."""
    if not 0.0 < frac < 1.0:
        raise ValueError(f"frac must be in (0, 1), got {frac}")
    n_t = torch.as_tensor(np.asarray(n, dtype=np.float64))
    if torch.any(n_t <= 0):
        raise ValueError("Sérsic index n must be > 0")
    b_n = _gammaincinv(2.0 * n_t, 0.5)
    x_f = _gammaincinv(2.0 * n_t, frac)
    return ((x_f / b_n) ** n_t).numpy()


def concentration_from_n(n, outer: float = 0.9, inner: float = 0.5) -> np.ndarray:
    """Concentration ``R_outer / R_inner`` of a Sérsic profile of index ``n`` (exact)."""
    return sersic_radius_fraction(n, outer) / sersic_radius_fraction(n, inner)


# Tabulated once on a log grid; C(n) is smooth and monotonic, so linear interpolation in
# (C, log n) is accurate to < 0.5 % in n across the range.
_N_GRID = np.exp(np.linspace(math.log(N_MIN), math.log(N_MAX), 400))
_C_GRID = concentration_from_n(_N_GRID)


def n_from_concentration(c) -> np.ndarray:
    """Sérsic index whose R90/R50 equals ``c``; clipped to [N_MIN, N_MAX] = [0.2, 8].

    NaN in gives NaN out.  Measured concentrations of PSF-convolved images are lower than the
    intrinsic ones, so for small galaxies this underestimates n (a starting guess only).
    """
    c = np.asarray(c, dtype=np.float64)
    out = np.exp(np.interp(c, _C_GRID, np.log(_N_GRID)))
    return np.where(np.isfinite(c), out, np.nan)


def kron_fraction(n, k: float = 2.5) -> np.ndarray:
    """Fraction of a Sérsic profile's total flux inside ``k`` (> 0) first-moment (Kron) radii,
    ``R_1 = r_e Gamma(3n) / (b_n^n Gamma(2n))``: 0.96 for n = 1, 0.90 for n = 4 at k = 2.5."""
    if not k > 0:
        raise ValueError(f"k must be > 0, got {k}")
    n_t = torch.as_tensor(np.asarray(n, dtype=np.float64))
    b_n = _gammaincinv(2.0 * n_t, 0.5)
    r1 = torch.exp(torch.lgamma(3.0 * n_t) - torch.lgamma(2.0 * n_t)) / b_n ** n_t
    return torch.special.gammainc(2.0 * n_t, b_n * (k * r1) ** (1.0 / n_t)).numpy()


def kron_concentration_from_n(n, k: float = 2.5) -> np.ndarray:
    """R90 / R50 measured relative to the Kron flux (``k`` Kron radii) instead of the total:
    radii enclosing 90 % and 50 % of the Kron flux.  Lower than :func:`concentration_from_n`
    because the Kron aperture misses the outer light (2.16 against 2.32 for n = 1, 4.03 against
    5.55 for n = 4)."""
    f = np.atleast_1d(kron_fraction(n, k))
    n = np.atleast_1d(np.asarray(n, dtype=np.float64))
    out = np.array([sersic_radius_fraction(ni, 0.9 * fi) / sersic_radius_fraction(ni, 0.5 * fi)
                    for ni, fi in zip(n, f)])
    return out.reshape(np.shape(n)) if out.size > 1 else out


_CK_GRID = np.array([float(kron_concentration_from_n(v)[0]) for v in _N_GRID[::8]])
_NK_GRID = _N_GRID[::8]


def n_from_kron_concentration(c) -> np.ndarray:
    """Sérsic index whose Kron-relative R90/R50 (see :func:`kron_concentration_from_n`)
    equals ``c``; clipped to [N_MIN, N_MAX]; NaN in, NaN out."""
    c = np.asarray(c, dtype=np.float64)
    out = np.exp(np.interp(c, _CK_GRID, np.log(_NK_GRID)))
    return np.where(np.isfinite(c), out, np.nan)


def kron_half_radius_ratio(n, k: float = 2.5) -> np.ndarray:
    """Radius enclosing half the Kron flux, in units of the true half-light radius r_e
    (< 1: 0.96 for n = 1, 0.84 for n = 4); divide a measured one by it to get r_e."""
    f = np.atleast_1d(kron_fraction(n, k))
    n = np.atleast_1d(np.asarray(n, dtype=np.float64))
    return np.array([float(sersic_radius_fraction(ni, 0.5 * fi)) for ni, fi in zip(n, f)])


_KF_GRID = kron_fraction(_NK_GRID)
_KH_GRID = kron_half_radius_ratio(_NK_GRID)


def kron_corrections(n) -> tuple[np.ndarray, np.ndarray]:
    """(:func:`kron_fraction`, :func:`kron_half_radius_ratio`) at 2.5 Kron radii, interpolated
    in log n from a table (relative error < 1e-3; the exact functions cost a root solve)."""
    logn = np.log(np.clip(np.asarray(n, dtype=np.float64), N_MIN, N_MAX))
    return (np.interp(logn, np.log(_NK_GRID), _KF_GRID),
            np.interp(logn, np.log(_NK_GRID), _KH_GRID))


def pa_from_sep_theta(theta_rad) -> np.ndarray:
    """GALFIT position angle (degrees CCW from +y, in (-90, 90]) from sep's ``theta``
    (radians CCW from +x, x = array columns): ``pa = degrees(theta) - 90``, wrapped."""
    pa = np.degrees(np.asarray(theta_rad, dtype=np.float64)) - 90.0
    pa = np.mod(pa + 90.0, 180.0) - 90.0          # now in [-90, 90)
    return np.where(pa == -90.0, 90.0, pa)


def q_from_sep_axes(a, b) -> np.ndarray:
    """Axis ratio ``q = b / a`` from sep's RMS semi-axes, clipped to [Q_MIN, 1] = [0.05, 1]."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.minimum(a, b) / np.maximum(a, b)
    return np.clip(np.where(np.isfinite(q), q, 1.0), Q_MIN, 1.0)


def r_e_major_from_circular(r_circ, q) -> np.ndarray:
    """Major-axis half-light radius from a circular-aperture one (pixels).

    A circular aperture of radius R around an elliptical profile with major-axis radius r_e
    and axis ratio q encloses about as much light as the ellipse of the same area, whose
    major axis is R / sqrt(q); so ``r_e = R / sqrt(q)``.  Exact for q = 1; for flat, concentrated
    profiles it overestimates r_e by up to ~10-20 %, acceptable for a starting guess.
    """
    return np.asarray(r_circ, dtype=np.float64) / np.sqrt(np.asarray(q, dtype=np.float64))


def mag_from_flux(flux, zeropoint: float) -> np.ndarray:
    """``zeropoint - 2.5 log10(flux)``; NaN for non-positive flux."""
    flux = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, zeropoint - 2.5 * np.log10(flux), np.nan)


def fits_position(x0, y0) -> tuple[np.ndarray, np.ndarray]:
    """1-based FITS pixel coordinates (x = column, y = row) from 0-based array positions."""
    return np.asarray(x0, dtype=np.float64) + 1.0, np.asarray(y0, dtype=np.float64) + 1.0
