"""The background and the noise of one cutout, measured from its pixels.

Used by ``fit`` and ``run`` alike (one rule for both):

* :func:`estimate_sky`: sky level and per-pixel RMS (image units) on the pixels outside all
  sources (sep detection, segments grown by 2 px), robust to a galaxy filling much of the cutout;
* :func:`estimate_sigma`: a 1-sigma map from the sky RMS, plus Poisson noise of the
  sky-subtracted signal when the gain is known, or measured from the pixels
  (:func:`~galmoss_auto.fitting.gain.estimate_gain`);
* :func:`complete_noise`: what a reader calls on a fresh cutout: measure the sky (kept in
  ``cutout.meta["sky"]``, the start of a fitted sky and what the masker / initializer subtract
  for detection) and estimate sigma where none was given (Flag.SIGMA_ESTIMATED);
* :func:`sky_left_in`: whether a measured background says the sky is still in the image, which
  a model without a sky component cannot fit (Flag.SKY_NOT_MODELLED).

sep's errors on crowded cutouts (object-buffer or pixel-stack overflow) are retried with larger
limits by :func:`sep_extract`; if they persist the sky comes from clipped statistics alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .flags import Flag

__all__ = ["SkyEstimate", "estimate_sky", "estimate_sigma", "complete_noise", "sky_left_in",
           "SKY_LEFT_IN_RMS", "STRUCTURED_SKY_RATIO", "STRUCTURED_SKY_TREND",
           "pixel_noise", "sky_trend", "sep_extract", "SepOverflow",
           "robust_stats", "grow"]

#: A background this many sky RMS from zero or more means the sky was left in the image.  Real
#: sky-subtracted images in ../shared/data measure 0.0-0.5 (SDSS, KiDS, HSC, DECaLS stamps) and
#: 0.8-1.5 where a large galaxy's wings reach the cutout's edges (IC 3478, VCC 1512, NGC 3073);
#: raw frames with their sky measure tens to hundreds (sky-limited: level / RMS ~ sqrt(sky
#: counts)), the NTT EMMI field 105.  Where the galaxy fills the cutout the level is its light,
#: and no verdict is given (``method="pixel-noise"``, below).
SKY_LEFT_IN_RMS = 5.0

#: Sky pixels whose RMS exceeds this multiple of the pixel-to-pixel noise (:func:`pixel_noise`)
#: are not flat sky.  Real stamps with sky around their galaxy measure 1.0-1.4; IC 3478 at 64²
#: 2.9 and NGC 5419 in HST 10, whose galaxies fill the cutout.
STRUCTURED_SKY_RATIO = 2.0
#: ... and when the sky nearer the centre lies above the farther sky by this fraction of that
#: RMS (:func:`sky_trend`): the excess is a galaxy's wings, not correlated noise, which is flat
#: (a [1, 2, 1]-smoothed noise field has an RMS 2.4 times its pixel-to-pixel noise, and no
#: trend).  The real stamps above measure 0.0-0.9; IC 3478 at 64² 1.2, NGC 5419 1.4.
STRUCTURED_SKY_TREND = 0.5


@dataclass
class SkyEstimate:
    """Sky level and per-pixel RMS (image units), measured on ``n_pixels`` pixels outside all
    sources.  ``method``: ``"sep"`` (sources detected and excluded), ``"clipped"`` (sigma
    clipping only, when detection failed) or ``"pixel-noise"`` (the pixels outside the sources
    were not flat sky, a galaxy filling the cutout: ``rms`` is the pixel-to-pixel noise of
    :func:`pixel_noise`)."""

    level: float
    rms: float
    n_pixels: int
    method: str = "sep"


class SepOverflow(RuntimeError):
    """sep could not extract a cutout even with enlarged limits (a very crowded field)."""


def as_sep_array(a) -> np.ndarray:
    """C-contiguous, native-endian float64 copy (sep rejects FITS's big-endian views)."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64))


def robust_stats(values: np.ndarray, rounds: int = 3) -> tuple[float, float]:
    """Median and 1.4826 * MAD after ``rounds`` rounds of 3-sigma clipping."""
    v = values
    med, rms = float(np.median(v)), float(1.4826 * np.median(np.abs(v - np.median(v))))
    for _ in range(rounds):
        if rms <= 0:
            break
        keep = np.abs(v - med) < 3.0 * rms
        if keep.sum() < 10:
            break
        v = v[keep]
        med = float(np.median(v))
        rms = float(1.4826 * np.median(np.abs(v - med)))
    return med, rms


def grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of ``mask`` by a disk of ``radius`` pixels (>= 0)."""
    if radius < 0:
        raise ValueError(f"dilation radius must be >= 0, got {radius}")
    mask = np.asarray(mask, bool)
    if radius == 0 or not mask.any():
        return mask.copy()
    h, w = mask.shape
    out = np.zeros((h + 2 * radius, w + 2 * radius), bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy <= radius * radius:
                out[radius + dy:radius + dy + h, radius + dx:radius + dx + w] |= mask
    return out[radius:radius + h, radius:radius + w]


#: sub-object (deblending) limit of the retry (sep's default is 1024).
RETRY_SUB_OBJECTS = 16384
_OVERFLOW_WORDS = ("overflow", "object buffer", "pixel stack", "pixstack", "deblend",
                   "sub_object", "sub-object")


def sep_extract(data, thresh, **kwargs):
    """``sep.extract`` that survives crowded cutouts.

    The active-pixel stack is first made as large as the image (it cannot then overflow).  An
    overflow of the object or deblending buffers is retried with the sub-object limit raised to
    :data:`RETRY_SUB_OBJECTS` and a 4x pixel stack, then also with deblending off (``deblend_cont = 1``: blended objects stay one segment); a
    further failure raises :class:`SepOverflow` (callers flag and fall back).  Other sep
    errors propagate unchanged.
    """
    import sep
    n = int(np.size(data))
    if n > sep.get_extract_pixstack():
        sep.set_extract_pixstack(n)
    # (sub-object limit, pixel stack, extra keywords) per attempt; limits are raised for one
    # attempt and restored afterwards (they are process-wide, and huge ones make sep crash)
    attempts = [(None, None, {}), (RETRY_SUB_OBJECTS, 4 * n, {}),
                (RETRY_SUB_OBJECTS, 4 * n, {"deblend_cont": 1.0})]
    last = None
    for limit, stack, extra in attempts:
        old_limit, old_stack = sep.get_sub_object_limit(), sep.get_extract_pixstack()
        try:
            if limit is not None and limit > old_limit:
                sep.set_sub_object_limit(int(limit))
            if stack is not None and stack > old_stack:
                sep.set_extract_pixstack(int(stack))
            return sep.extract(data, thresh, **(kwargs | extra))
        except Exception as exc:  # sep raises a bare Exception for its buffer overflows
            if not any(w in str(exc).lower() for w in _OVERFLOW_WORDS):
                raise
            last = exc
        finally:
            sep.set_sub_object_limit(int(old_limit))
            sep.set_extract_pixstack(int(old_stack))
    raise SepOverflow(f"sep overflow persisted with enlarged limits and no deblending: {last}")


def estimate_sky(image: np.ndarray, bad: np.ndarray, thresh: float = 1.5) -> SkyEstimate:
    """Sky level and RMS of a cutout dominated by one galaxy.

    A first robust estimate over all good pixels sets a threshold; sources detected by sep
    above it (segments grown by 2 pixels) are excluded and the statistics recomputed.  sep's own
    mesh background would be biased by a galaxy that fills much of a small cutout.  When sep
    cannot extract the cutout (:class:`SepOverflow`), 3-sigma-clipped statistics are returned
    (``method="clipped"``).  When the pixels left are not flat (their RMS more than
    :data:`STRUCTURED_SKY_RATIO` times the pixel-to-pixel noise, and brighter towards the centre
    by :data:`STRUCTURED_SKY_TREND` of it), the RMS is that noise and the level is measured
    again outside the sources detected at it (``method="pixel-noise"``): a galaxy that fills
    the cutout would otherwise inflate the RMS, and with it every sigma, threshold and error,
    3.5× on IC 3478 at 64².  Raises ``ValueError`` when fewer than 10 good pixels remain.
    """
    data = as_sep_array(image)
    bad = np.asarray(bad, bool)
    good = data[~bad]
    if good.size < 10:
        raise ValueError(f"only {good.size} good pixels; at least 10 are needed to estimate the sky")
    level, rms = robust_stats(good, rounds=1)      # only sets the detection threshold
    if not rms > 0:
        rms = float(np.std(good)) or 1.0
    try:
        _, seg = sep_extract(data - level, thresh, err=rms, mask=bad, minarea=5,
                             segmentation_map=True)
    except SepOverflow:
        level, rms2 = robust_stats(good)
        return SkyEstimate(level=level, rms=rms2 if rms2 > 0 else rms, n_pixels=int(good.size),
                           method="clipped")
    sources = grow(seg > 0, 2)
    level, rms, n_sky = _sky_stats(data, bad, sources, level, rms)
    outside = ~bad & ~sources
    noise = pixel_noise(data, outside)
    # correlated noise (a smoothed or resampled image) also has an RMS above its pixel-to-pixel
    # noise, but no trend: wings fall off away from the centre
    if not (rms > STRUCTURED_SKY_RATIO * noise
            and sky_trend(data, outside) > STRUCTURED_SKY_TREND * rms):
        return SkyEstimate(level=level, rms=rms, n_pixels=n_sky)
    # The "sky" is not flat: a galaxy filling the cutout left its light (and gradient) in the
    # pixels outside the segments, because the threshold was set from that inflated RMS.  The
    # noise is the pixel-to-pixel one; the level comes from a detection at that noise, which
    # takes more of the galaxy's wings out of the sky.
    try:
        _, seg = sep_extract(data - level, thresh, err=noise, mask=bad, minarea=5,
                             segmentation_map=True)
        level, _, n_sky = _sky_stats(data, bad, grow(seg > 0, 2), level, rms)
    except SepOverflow:
        pass
    return SkyEstimate(level=level, rms=noise, n_pixels=n_sky, method="pixel-noise")


def _sky_stats(data, bad, sources, level, rms):
    """(level, rms, n) of the pixels outside ``sources``; the given level and rms when fewer
    than 10 such pixels remain."""
    sky = data[~bad & ~sources]
    if sky.size >= 10:
        level, rms2 = robust_stats(sky)
        if rms2 > 0:
            rms = rms2
    return level, rms, int(sky.size)


def sky_trend(data: np.ndarray, ok: np.ndarray) -> float:
    """Median of the ``ok`` pixels nearer the cutout centre than their median distance from
    it, minus the median of the farther ones: about 0 for flat sky, positive where a galaxy's
    wings fill the cutout.  NaN with fewer than 10 pixels."""
    ok = np.asarray(ok, bool)
    if ok.sum() < 10:
        return float("nan")
    h, w = data.shape
    yy, xx = np.nonzero(ok)
    r = np.hypot(yy - (h - 1) / 2.0, xx - (w - 1) / 2.0)
    values = data[yy, xx]
    near = r <= np.median(r)
    if near.all() or not near.any():
        return float("nan")
    return float(np.median(values[near]) - np.median(values[~near]))


def pixel_noise(data: np.ndarray, ok: np.ndarray) -> float:
    """Pixel-to-pixel noise RMS from second differences along x and y (``I - (left + right) /
    2``, variance 1.5 sigma² for white noise), robust (MAD) over the stencils lying wholly on
    ``ok`` pixels: blind to smooth gradients and to a galaxy's light.  Exact for white noise,
    10-30 % low for the correlated noise of resampled coadds (KiDS, SDSS, HSC, DECaLS stamps:
    sky RMS / this = 1.1-1.4).  NaN when fewer than 10 stencils fit."""
    ok = np.asarray(ok, bool)
    dx = data[:, 1:-1] - 0.5 * (data[:, :-2] + data[:, 2:])
    dy = data[1:-1, :] - 0.5 * (data[:-2, :] + data[2:, :])
    d = np.concatenate([dx[ok[:, 1:-1] & ok[:, :-2] & ok[:, 2:]],
                        dy[ok[1:-1, :] & ok[:-2, :] & ok[2:, :]]])
    if d.size < 10:
        return float("nan")
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(1.5))


def estimate_sigma(cutout, gain: float | None = None, sky: SkyEstimate | None = None
                   ) -> tuple[np.ndarray, dict]:
    """1-sigma map from the image: the sky RMS measured off the sources, plus Poisson noise of
    the sky-subtracted signal ``max(image - sky, 0) / gain`` when ``gain`` (e-/image unit, > 0)
    is known.  Returns the map and ``sky_level`` / ``sky_rms`` columns (image units).  The sky
    estimate is stored in ``cutout.meta["sky"]``."""
    from .cutout import CutoutError
    if gain is not None and not (gain > 0 and np.isfinite(gain)):
        raise CutoutError(f"{cutout.source}: gain must be finite and > 0 e-/unit, got {gain}")
    sky = sky or estimate_sky(cutout.image, cutout.mask)
    cutout.meta["sky"] = sky
    var = np.full(cutout.image.shape, sky.rms ** 2)
    if gain is not None:
        var = var + np.clip(cutout.image - sky.level, 0.0, None) / gain
    return np.sqrt(var), {"sky_level": sky.level, "sky_rms": sky.rms}


def complete_noise(cutout) -> dict:
    """Measure the sky of ``cutout`` and estimate its sigma map when it has none (in place).

    Sets ``cutout.meta["sky"]`` (a :class:`SkyEstimate`), and without a sigma map
    ``cutout.sigma`` (from :func:`estimate_sigma` with ``cutout.meta["gain"]``; where no gain
    was given, one measured from the pixels by
    :func:`~galmoss_auto.fitting.gain.estimate_gain`, ``meta["sources"]["gain"] = "estimated"``,
    or none where the photon noise cannot be seen), ``Flag.SIGMA_ESTIMATED`` and
    ``cutout.meta["sources"]["sigma"] = "estimated"``.  Returns the catalog columns
    ``sky_level``, ``sky_rms`` (image units), ``sigma_estimated`` and ``sigma_gain`` (the gain
    in the estimated map's Poisson term, e-/image unit; NaN: none, or a sigma map given).  Raises
    :class:`~galmoss_auto.fitting.cutout.CutoutError` naming the file when neither can be
    measured (e.g. fewer than 10 good pixels).
    """
    from .cutout import CutoutError
    try:
        sky = cutout.meta.get("sky") or estimate_sky(cutout.image, cutout.mask)
    except ValueError as exc:
        raise CutoutError(f"{cutout.source}: cannot measure the sky: {exc}") from None
    cutout.meta["sky"] = sky
    columns = {"sky_level": float(sky.level), "sky_rms": float(sky.rms), "sigma_estimated": False,
               "sigma_gain": float("nan")}
    if cutout.sigma is None:
        gain = cutout.meta.get("gain")
        if gain is None and sky.rms > 0:
            # a bright core's photon noise left out of the map skews the fit (0.10 mag on KiDS
            # stamps against 0.02 with it): measured from the pixels where nothing gave it
            from .gain import estimate_gain
            gain = estimate_gain(cutout.image, cutout.mask, sky.level, sky.rms)
            if gain is not None:
                cutout.meta["gain"] = gain
                cutout.meta.setdefault("sources", {})["gain"] = "estimated"
        sigma, _ = estimate_sigma(cutout, gain, sky)
        columns["sigma_gain"] = float("nan") if gain is None else float(gain)
        cutout.sigma = sigma
        cutout.flags = int(cutout.flags) | int(Flag.SIGMA_ESTIMATED)
        cutout.meta.setdefault("sources", {})["sigma"] = "estimated"
        columns["sigma_estimated"] = True
    return columns


def sky_left_in(sky: SkyEstimate) -> bool:
    """True when the background ``sky`` lies more than :data:`SKY_LEFT_IN_RMS` sky RMS from
    zero: the image still holds its sky, which a model without a sky component hands to the
    galaxy's profile (a Sérsic with r_e of thousands of pixels on blank sky).  A background
    measured where a galaxy fills the cutout (``method="pixel-noise"``) is mostly its light:
    sky-subtracted or not cannot be told from the cutout, and False is returned."""
    if sky.method == "pixel-noise":
        return False
    return bool(sky.rms > 0 and abs(sky.level) > SKY_LEFT_IN_RMS * sky.rms)
