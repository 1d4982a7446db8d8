"""What a FITS header says about its image beyond the data: the zero-point an image's unit or
photometric keywords imply, the gain, which bits of a mask plane are bad pixels, and which
HDU holds which band.  Used by the one cutout reader (:mod:`galmoss_auto.fitting.cutout`);
the conventions are those of the surveys' own pipelines, cited where each applies.  Errors are
ValueErrors whose message names ``where`` (the file) and the keyword; the reader turns them into
:class:`~galmoss_auto.fitting.cutout.CutoutError`.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["UNIT_ZEROPOINTS", "AFW_BAD_PLANES", "GAIN_KEYS", "DN_GAIN_KEYS", "bad_pixels",
           "header_zeropoint", "header_gain", "bands"]

#: Flux units (``BUNIT``, lower case) whose AB zero-point is fixed by the unit itself, tried
#: after the explicit keywords (``MAGZP``, ...) and ``FLUXMAG0`` (zp = 2.5 log10 FLUXMAG0, the
#: LSST/HSC pipelines' flux of a magnitude-0 source): m = -2.5 log10(f / 3631 Jy).
UNIT_ZEROPOINTS = {"njy": 31.4, "nanojansky": 31.4, "ujy": 23.9, "microjy": 23.9,
                   "microjansky": 23.9, "mjy": 16.4, "millijansky": 16.4, "jy": 8.9, "jansky": 8.9,
                   "nanomaggy": 22.5, "nanomaggies": 22.5, "nmgy": 22.5}
#: Mask planes of the LSST / HSC pipelines' (afw) bitmask that mark pixels unfit to use.  A
#: mask whose header names its planes (``MP_<PLANE> = bit``) is read by these bits only: its
#: other planes describe good pixels (DETECTED is set on every source, the target included;
#: CLIPPED, SENSOR_EDGE, INEXACT_PSF, BRIGHT_OBJECT, ... flag coadd inputs or catalog quality),
#: and "nonzero = bad" would mask the galaxy itself.
AFW_BAD_PLANES = ("BAD", "SAT", "INTRP", "CR", "EDGE", "NO_DATA", "SUSPECT", "UNMASKEDNAN")
#: Header keywords of the gain in e- per image unit (SExtractor's ``GAIN_KEY`` convention: a
#: survey that rescales its images writes the effective gain); 0 or less means unknown.
GAIN_KEYS = ("GAIN", "EFFGAIN", "EGAIN")
#: Detector gains in e- per DN (HST): they apply to an image in counts, times ``EXPTIME`` to one
#: in counts per second, and to nothing else.
DN_GAIN_KEYS = ("ATODGAIN", "CCDGAIN")
_COUNT_UNITS = ("", "counts", "count", "dn", "adu", "datanumber", "datanumbers")
_ELECTRON_UNITS = ("electrons", "electron", "e-", "e")
_PER_SECOND = ("/s", "/sec", "/second", "s-1", "s**-1", "s^-1")


def bad_pixels(values: np.ndarray, header: dict | None = None) -> np.ndarray:
    """Bool mask (True = bad) of a mask plane: nonzero = bad (GALFIT, Imfit), except for an
    LSST / HSC bitmask, whose header names its planes (``MP_BAD = 0``, ``MP_DETECTED = 5``,
    ...): then only the bits of :data:`AFW_BAD_PLANES` are bad."""
    values = np.asarray(values)
    planes = {str(k).upper()[3:]: v for k, v in (header or {}).items() if str(k).upper().startswith("MP_")}
    if not planes:
        return values != 0
    bits = 0
    for name in AFW_BAD_PLANES:
        if name in planes:
            bits |= 1 << int(planes[name])
    finite = np.isfinite(values)
    flags = np.where(finite, values, 0).astype(np.int64)
    return ((flags & bits) != 0) | ~finite


def header_zeropoint(header: dict, where: str, pixel_scale: float | None = None) -> float | None:
    """The AB zero-point that the header implies without stating one; None when it implies none.

    In this order: ``FLUXMAG0`` (2.5 log10 of it); a flux-density unit in ``BUNIT``
    (:data:`UNIT_ZEROPOINTS`); ``MJy/sr`` (JWST, Spitzer) with a known ``pixel_scale``
    (arcsec/px): -2.5 log10(10^6 Ω / 3631), Ω the pixel's solid angle; HST's ``PHOTFLAM``
    (erg/s/cm²/Å per count or electron per second) and ``PHOTPLAM`` (Å) for an image in counts
    or electrons (``BUNIT`` absent, counts, DN, electrons), per second or in all (then
    + 2.5 log10 ``EXPTIME``): -2.5 log10 PHOTFLAM - 5 log10 PHOTPLAM - 2.408."""
    if header.get("FLUXMAG0") not in (None, ""):
        try:
            f0 = float(header["FLUXMAG0"])
        except (TypeError, ValueError):
            raise ValueError(f"{where}: header FLUXMAG0 = {header['FLUXMAG0']!r} is not a number") from None
        if not (math.isfinite(f0) and f0 > 0):
            raise ValueError(f"{where}: header FLUXMAG0 = {f0} must be finite and > 0 (the flux "
                             "of a magnitude-0 source)")
        return 2.5 * math.log10(f0)
    base, per_second = _unit(header)
    if not per_second and base in UNIT_ZEROPOINTS:
        return UNIT_ZEROPOINTS[base]
    if not per_second and base in ("mjy/sr", "mjysr-1", "mjy/steradian") and pixel_scale:
        omega = (pixel_scale / 206264.806) ** 2
        return -2.5 * math.log10(1e6 * omega / 3631.0)
    flam, plam = _positive(header, "PHOTFLAM"), _positive(header, "PHOTPLAM")
    if flam and plam and base in _COUNT_UNITS + _ELECTRON_UNITS:
        zp = -2.5 * math.log10(flam) - 5.0 * math.log10(plam) - 2.408
        if per_second:
            return zp
        exptime = _positive(header, "EXPTIME")
        if exptime:
            return zp + 2.5 * math.log10(exptime)
    return None


def _unit(header: dict) -> tuple[str, bool]:
    """(``BUNIT`` lower case without spaces and without a per-second suffix, whether it had
    one): ``ELECTRONS/S`` -> ("electrons", True)."""
    unit = str(header.get("BUNIT", "")).strip().lower().replace(" ", "")
    for x in _PER_SECOND:
        if unit.endswith(x):
            return unit[:-len(x)], True
    return unit, False


def _positive(header: dict, key: str) -> float | None:
    """``header[key]`` as a finite positive number, else None."""
    try:
        v = float(header.get(key))
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def header_gain(header: dict) -> float | None:
    """The gain in e- per image unit the header gives; None when it cannot say.

    ``GAIN`` (:data:`GAIN_KEYS`) as it stands; else what ``BUNIT`` implies: 1 for an image in
    electrons, ``EXPTIME`` for one in electrons per second; else a detector gain in e-/DN
    (:data:`DN_GAIN_KEYS`) for an image in counts (``BUNIT`` absent, counts, DN, ADU), times
    ``EXPTIME`` for counts per second.  Values that are not positive numbers (``GAIN = 0`` is
    often written for "unknown") are passed over."""
    gain = next((g for g in (_positive(header, k) for k in GAIN_KEYS) if g is not None), None)
    if gain is not None:
        return gain
    base, per_second = _unit(header)
    scale = _positive(header, "EXPTIME") if per_second else 1.0
    if scale is None:  # per second, but no exposure time
        return None
    if base in _ELECTRON_UNITS:
        return scale
    if base in _COUNT_UNITS:
        detector = next((g for g in (_positive(header, k) for k in DN_GAIN_KEYS) if g is not None), None)
        return None if detector is None else detector * scale
    return None


def bands(hdul) -> tuple[dict, dict]:
    """({band: HDU index} of the images, {band: HDU index} of the inverse variances) of a file
    whose 2-D HDUs carry ``BAND`` (and ``IMAGETYP``: ``image`` / ``invvar``), as the Legacy
    Surveys' files do: viewer cutouts (g, r, z images, each followed by its invvar) and their
    PSF files (one HDU per band).  Empty for other files."""
    images, ivars = {}, {}
    for k, h in enumerate(hdul):
        kind = str(h.header.get("IMAGETYP", "")).strip().lower()
        band = str(h.header.get("BAND", "")).strip()
        # from the headers alone: the pixels of the HDUs not taken are never read
        if not band or not getattr(h, "is_image", False) or int(h.header.get("NAXIS", 0)) < 2:
            continue
        if kind in ("invvar", "ivar"):
            ivars.setdefault(band, k)
        elif kind in ("", "image"):
            images.setdefault(band, k)
    return images, ivars
