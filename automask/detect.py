"""sep (SExtractor in Python) detection of one cutout, shared by the sep masker and the sep
initializer so that each cutout is detected once.

A :class:`Detection` holds sep's object table, its segmentation map (0 = sky, i + 1 = object i)
and the index of the central object: the one whose segment contains the cutout centre, else
the detection with the smallest ``distance / (flux / max flux)^(1/4)`` (nearest, favouring
bright objects), provided it lies within ``max_central_distance`` of the centre.

The sky measurement itself (:func:`estimate_sky`) lives in :mod:`galmoss_auto.fitting.noise`,
shared with ``fit``; it is re-exported here.  Crowded cutouts whose deblending overflows sep's
buffers are retried with larger limits and then without deblending
(:func:`~galmoss_auto.fitting.noise.sep_extract`); :class:`SepOverflow` reaches the caller only
when that fails too, and the pipeline then flags MASK_FAILED / INIT_FALLBACK.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from galmoss_auto.fitting.noise import (SepOverflow, SkyEstimate, as_sep_array, estimate_sky,
                                        grow, sep_extract)

__all__ = ["DetectConfig", "Detection", "SkyEstimate", "estimate_sky", "detect", "as_sep_array",
           "grow", "SepOverflow", "MIN_CENTRAL_SNR"]

#: A central object below this isophotal S/N (its flux over the noise summed in quadrature over
#: its segment) is not a detection: ``Flag.NO_CENTRAL_DETECTION``, though its pixels stay
#: unmasked and its moments still give the start.  At 1.5 sigma sep takes a noise peak for the
#: central on 59 % of blank 64² cutouts, at S/N 3.5-7 (90 % below 4.9), and `fit` then fitted
#: noise with clean flags; none of 600 simulated galaxies of S/N >= 10 measures below 7.
MIN_CENTRAL_SNR = 5.0


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

    @cached_property
    def central_snr(self) -> float:
        """Isophotal S/N of the central object (NaN when there is none); computed once, as the
        masker and the initializer both ask."""
        if self.central < 0:
            return float("nan")
        noise = float(np.sqrt(np.sum(self.err[self.segmap == self.central + 1] ** 2)))
        return float(self.objects["flux"][self.central]) / noise if noise > 0 else float("nan")

    @property
    def central_detected(self) -> bool:
        """A central object exists and its S/N reaches :data:`MIN_CENTRAL_SNR`."""
        return self.central >= 0 and self.central_snr >= MIN_CENTRAL_SNR


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
    objects, segmap = sep_extract(data, config.thresh, err=err, mask=bad,
                                  minarea=int(config.minarea),
                                  deblend_nthresh=int(config.deblend_nthresh),
                                  deblend_cont=float(config.deblend_cont),
                                  segmentation_map=True)
    central = pick_central(objects, segmap, config.max_central_distance)
    return Detection(objects=objects, segmap=np.asarray(segmap, np.int32), central=central,
                     data=data, err=err, bad=bad, sky=sky)
