"""Render one cutout's scene with GalSim: noiseless image, per-object footprints and the
segmentation map; then sky + Poisson + read noise and the matching sigma map.

Coordinates: GalSim images here have bounds 1..size on both axes, so GalSim's positions are
already the catalog's 1-based FITS pixel coordinates (x along columns, y along rows).
"""

from __future__ import annotations

import galsim
import numpy as np

from .psf import BRIGHT_GSPARAMS, GSPARAMS

__all__ = ["Stamp", "draw_object", "segmentation", "add_noise", "bright_star_profile", "star_profile"]


class Stamp:
    """An object's noiseless pixels on (part of) the cutout: ``array`` covers rows
    ``r0:r0+h`` and columns ``c0:c0+w`` of the cutout (0-based)."""

    __slots__ = ("array", "r0", "c0")

    def __init__(self, array: np.ndarray, r0: int, c0: int):
        self.array, self.r0, self.c0 = array, r0, c0

    @property
    def slices(self):
        h, w = self.array.shape
        return slice(self.r0, self.r0 + h), slice(self.c0, self.c0 + w)


def _odd(n: int) -> int:
    return n + 1 - n % 2


def draw_object(profile: galsim.GSObject, psf: galsim.GSObject, x: float, y: float, size: int,
                full: bool = False, max_stamp: int | None = None, cover: bool = False,
                bright: bool = False, method: str = "auto") -> Stamp | None:
    """Draw ``profile`` convolved with ``psf`` (and the pixel: GalSim method='auto') centred at
    1-based (x, y) on a ``size`` x ``size`` cutout.  ``full``: draw on the whole cutout (used for
    the central galaxy and bright-star halos); otherwise on an odd stamp sized by GalSim to hold
    the object (capped at ``max_stamp``, default 2 size + 1) and clipped to the cutout.
    ``cover``: make the stamp, centred on the object, large enough to cover the whole cutout (for
    a bright star outside it: drawing it on the cutout with a large offset would alias in GalSim's
    FFT).  ``bright``: use :data:`BRIGHT_GSPARAMS` (no FFT ringing around very bright objects).
    ``method``: GalSim's drawing method ("no_pixel" draws analytic profiles in real space).
    Returns None when the object's stamp misses the cutout entirely."""
    gsp = BRIGHT_GSPARAMS if bright else GSPARAMS
    obj = galsim.Convolve(profile, psf, gsparams=gsp) if psf is not None else profile.withGSParams(gsp)
    if full:
        image = galsim.ImageF(size, size, scale=1.0)
        centre = image.true_center
        obj.drawImage(image=image, offset=(x - centre.x, y - centre.y), method=method)
        return Stamp(image.array, 0, 0)
    cap = max_stamp or 2 * size + 1
    n = min(_odd(obj.getGoodImageSize(1.0)), _odd(cap))
    ix, iy = int(round(x)), int(round(y))
    if cover:
        n = 2 * max(abs(ix - 1), abs(ix - size), abs(iy - 1), abs(iy - size)) + 1
    half = n // 2
    # stamp pixel columns ix-half .. ix+half (1-based); skip if it misses the cutout
    if ix + half < 1 or ix - half > size or iy + half < 1 or iy - half > size:
        return None
    image = galsim.ImageF(n, n, scale=1.0)
    image.setCenter(ix, iy)
    obj.drawImage(image=image, offset=(x - ix, y - iy), method=method)
    c_lo, c_hi = max(ix - half, 1), min(ix + half, size)
    r_lo, r_hi = max(iy - half, 1), min(iy + half, size)
    arr = image.array[r_lo - (iy - half):r_hi - (iy - half) + 1, c_lo - (ix - half):c_hi - (ix - half) + 1]
    return Stamp(np.array(arr), r_lo - 1, c_lo - 1)


def segmentation(stamps: list[Stamp | None], threshold: float, size: int,
                 artifacts: list[tuple[int, tuple]] = ()) -> np.ndarray:
    """Integer map: 0 sky, ``k + 1`` where object ``k``'s noiseless model exceeds ``threshold``
    and outshines every other object there (``stamps[0]`` is the central galaxy -> label 1).
    ``artifacts`` = [(label, (rows, cols, ...))] are painted last: their pixels are corrupt
    whatever lies below."""
    seg = np.zeros((size, size), np.int32)
    best = np.zeros((size, size), np.float64)
    for k, stamp in enumerate(stamps):
        if stamp is None:
            continue
        sl = stamp.slices
        val = stamp.array
        win = (val > threshold) & (val > best[sl])
        seg[sl][win] = k + 1
        best[sl][win] = val[win]
    for label, (rows, cols, _) in artifacts:
        seg[rows, cols] = label
    return seg


def add_noise(rng: np.random.Generator, noiseless: np.ndarray, sky_level: float, gain: float,
              read_noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Sky-subtracted noisy image and its 1-sigma map (image units).

    Electrons e = Poisson(gain (model + sky)) + Normal(0, read_noise); image = e / gain - sky.
    sigma = sqrt(gain (max(model, 0) + sky) + read_noise^2) / gain is the true standard deviation
    of each pixel, so (image - model) / sigma has zero mean and unit variance.
    """
    lam = gain * (np.clip(noiseless, 0.0, None) + sky_level)
    electrons = rng.poisson(lam).astype(np.float64)
    if read_noise > 0:
        electrons += rng.normal(0.0, read_noise, lam.shape)
    image = electrons / gain - sky_level
    sigma = np.sqrt(lam + read_noise ** 2) / gain
    return image, sigma


def bright_star_profile(flux: float, psf: galsim.GSObject, psf_fwhm_px: float) -> galsim.GSObject:
    """A bright star *including* its PSF: 95 % of ``flux`` in the PSF core plus an extended halo, a
    beta = 2 Moffat 5x wider than the seeing with 5 % (a stand-in for the scattered-light aureole).

    Meant for stars just outside the cutout, drawn with method="no_pixel": both parts are then
    evaluated in real space (an FFT would ring at this brightness), and only the smooth wings,
    for which the pixel response is negligible, fall on the cutout."""
    halo = galsim.Moffat(beta=2.0, fwhm=5.0 * psf_fwhm_px, flux=0.05 * flux, gsparams=BRIGHT_GSPARAMS)
    return galsim.Add([psf.withFlux(0.95 * flux), halo])


def star_profile(flux: float) -> galsim.GSObject:
    """A point source of ``flux``; convolved with the PSF it is the PSF."""
    return galsim.DeltaFunction(flux=flux, gsparams=GSPARAMS)

