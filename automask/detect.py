"""sep (SExtractor in Python) detection of one cutout, shared by the sep masker and the sep
initializer so that each cutout is detected once.

A :class:`Detection` holds sep's object table, its segmentation map (0 = sky, i + 1 = object i)
and the index of the central object: the one whose segment contains the cutout centre, else
the detection with the smallest ``distance / (flux / max flux)^(1/4)`` (nearest, favouring
bright objects), provided it lies within ``max_central_distance`` of the centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sep

__all__ = ["DetectConfig", "Detection", "SkyEstimate", "estimate_sky", "detect", "as_sep_array"]


def as_sep_array(a) -> np.ndarray:
    """C-contiguous, native-endian float64 copy (sep rejects FITS's big-endian views)."""
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64))


@dataclass(frozen=True)
class DetectConfig:
    """Detection settings.

    thresh : detection threshold in units of the noise sigma (> 0; default 1.5).
    minarea : minimum object area in pixels (>= 1; default 5).
    deblend_nthresh : deblending sub-thresholds (>= 1; default 32).
    deblend_cont : minimum contrast for deblending, in [0, 1] (default 0.005; 1 = no deblending).
    max_central_distance : a detection farther than this fraction of the cutout's smaller side
        from the centre is never taken as the central object (in (0, 1]; default 0.25).
    """

    thresh: float = 1.5
    minarea: int = 5
    deblend_nthresh: int = 32
    deblend_cont: float = 0.005
    max_central_distance: float = 0.25

    def __post_init__(self):
        if not self.thresh > 0:
            raise ValueError(f"thresh must be > 0, got {self.thresh}")
        if int(self.minarea) < 1:
            raise ValueError(f"minarea must be >= 1, got {self.minarea}")
        if int(self.deblend_nthresh) < 1:
            raise ValueError(f"deblend_nthresh must be >= 1, got {self.deblend_nthresh}")
        if not 0.0 <= self.deblend_cont <= 1.0:
            raise ValueError(f"deblend_cont must be in [0, 1], got {self.deblend_cont}")
        if not 0.0 < self.max_central_distance <= 1.0:
            raise ValueError(f"max_central_distance must be in (0, 1], got {self.max_central_distance}")


@dataclass
class SkyEstimate:
    """Sky level and per-pixel RMS (image units), measured on pixels outside all sources."""

    level: float
    rms: float
    n_pixels: int


def _robust_stats(values: np.ndarray, rounds: int = 3) -> tuple[float, float]:
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


def estimate_sky(image: np.ndarray, bad: np.ndarray, thresh: float = 1.5) -> SkyEstimate:
    """Sky level and RMS of a cutout dominated by one galaxy.

    A first robust estimate over all good pixels sets a threshold; sources detected by sep
    above it (segments grown by 2 pixels) are excluded and the statistics recomputed.  sep's own
    mesh background would be biased by a galaxy that fills much of a small cutout.
    Raises ``ValueError`` when fewer than 10 good pixels remain.
    """
    data = as_sep_array(image)
    bad = np.asarray(bad, bool)
    good = data[~bad]
    if good.size < 10:
        raise ValueError(f"only {good.size} good pixels; at least 10 are needed to estimate the sky")
    level, rms = _robust_stats(good, rounds=1)      # only sets the detection threshold
    if not rms > 0:
        rms = float(np.std(good)) or 1.0
    _reserve_pixstack(data.size)
    _, seg = sep.extract(data - level, thresh, err=rms, mask=bad, minarea=5, segmentation_map=True)
    sources = grow(seg > 0, 2)
    sky = data[~bad & ~sources]
    if sky.size >= 10:
        level, rms2 = _robust_stats(sky)
        if rms2 > 0:
            rms = rms2
    return SkyEstimate(level=level, rms=rms, n_pixels=int(sky.size))


def _reserve_pixstack(n_pixels: int) -> None:
    # sep's active-pixel stack defaults to 300,000 and raises on larger cutouts; a stack as
    # large as the image can never overflow.
    if n_pixels > sep.get_extract_pixstack():
        sep.set_extract_pixstack(int(n_pixels))


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


@dataclass
class Detection:
    """sep's result for one cutout (all positions 0-based array coordinates).

    objects : sep's structured array (fields x, y, a, b, theta, flux, npix, ...).
    segmap : int array (H, W); 0 = sky, i + 1 = ``objects[i]``.
    central : index of the central object in ``objects``, or -1 when none qualifies.
    data : the sky-subtracted image sep saw (float64, bad pixels set to 0).
    err : the per-pixel noise used for detection.
    bad : pixels excluded from detection (user mask and unusable pixels).
    sky : the sky estimate subtracted from ``data``.
    """

    objects: np.ndarray
    segmap: np.ndarray
    central: int
    data: np.ndarray
    err: np.ndarray
    bad: np.ndarray
    sky: SkyEstimate

    @property
    def n_objects(self) -> int:
        return int(len(self.objects))


def pick_central(objects: np.ndarray, segmap: np.ndarray, max_distance: float) -> int:
    """Index of the central object (see the module docstring), or -1."""
    if len(objects) == 0:
        return -1
    h, w = segmap.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    # The centre of an even-sized cutout falls between pixels: look at the 2x2 block around it.
    rows = sorted({int(np.floor(cy)), int(np.ceil(cy))})
    cols = sorted({int(np.floor(cx)), int(np.ceil(cx))})
    labels = [int(segmap[r, c]) for r in rows for c in cols if segmap[r, c] > 0]
    if labels:
        # Several segments touch the centre: the brightest wins.
        return max(set(labels), key=lambda lab: objects["flux"][lab - 1]) - 1
    dist = np.hypot(objects["x"] - cx, objects["y"] - cy)
    flux = np.clip(objects["flux"], 1e-30, None)
    score = dist / (flux / flux.max()) ** 0.25
    best = int(np.argmin(score))
    return best if dist[best] <= max_distance * min(h, w) else -1


def detect(image: np.ndarray, sigma: np.ndarray | None, bad: np.ndarray,
           config: DetectConfig = DetectConfig(), sky: SkyEstimate | None = None) -> Detection:
    """Run sep on one cutout: subtract the sky, detect and deblend, find the central object.

    ``sigma`` is the per-pixel noise (image units); None uses the sky RMS everywhere.
    ``bad`` (True = excluded) are the user's mask and unusable pixels.  ``sky``: an estimate
    already made for these pixels (e.g. while estimating sigma), else one is made here.
    """
    bad = np.asarray(bad, bool)
    if sky is None:
        sky = estimate_sky(image, bad, config.thresh)
    data = as_sep_array(np.where(bad, 0.0, np.asarray(image, np.float64) - sky.level))
    err = as_sep_array(np.full(data.shape, sky.rms) if sigma is None else np.where(bad, sky.rms, sigma))
    _reserve_pixstack(data.size)
    objects, segmap = sep.extract(data, config.thresh, err=err, mask=bad,
                                  minarea=int(config.minarea),
                                  deblend_nthresh=int(config.deblend_nthresh),
                                  deblend_cont=float(config.deblend_cont),
                                  segmentation_map=True)
    central = pick_central(objects, segmap, config.max_central_distance)
    return Detection(objects=objects, segmap=np.asarray(segmap, np.int32), central=central,
                     data=data, err=err, bad=bad, sky=sky)
