"""``--mask sep``: mask every detected object except the central one.

Steps: estimate the sky, detect and deblend with sep, pick the central object (see
:mod:`galmoss_auto.automask.detect`), mask all other segments grown by a disk whose radius is
``dilate`` pixels plus a quarter of the object's equivalent radius ``sqrt(npix / pi)`` (bright
objects have wings beyond their isophote), and finally unmask the target's own segment so that
growing a neighbour never eats into the galaxy being fitted.  A central object below isophotal
S/N 5 (:data:`~galmoss_auto.automask.detect.MIN_CENTRAL_SNR`) stays unmasked but is flagged
NO_CENTRAL_DETECTION; its S/N is in ``mask_central_snr``.
"""

from __future__ import annotations

import numpy as np

from galmoss_auto.automask.base import MaskResult
from galmoss_auto.automask.detect import DetectConfig, detect, grow
from galmoss_auto.fitting.flags import Flag

__all__ = ["SepMasker", "contaminant_mask"]


def contaminant_mask(segmap: np.ndarray, objects: np.ndarray, central: int, dilate: int,
                     max_dilate: int = 12) -> np.ndarray:
    """Grown segments of all objects but ``central`` (-1: mask them all), minus the central
    segment.  Radii in pixels: ``min(dilate + round(0.25 sqrt(npix / pi)), max_dilate)``."""
    out = np.zeros(segmap.shape, bool)
    if len(objects) == 0:
        return out
    radii = np.minimum(dilate + np.round(0.25 * np.sqrt(objects["npix"] / np.pi)).astype(int),
                       max_dilate)
    labels = np.arange(1, len(objects) + 1)
    for r in np.unique(radii):
        chosen = labels[(radii == r) & (labels != central + 1)]
        if chosen.size:
            out |= grow(np.isin(segmap, chosen), int(r))
    if central >= 0:
        out &= segmap != central + 1
    return out


class SepMasker:
    """sep detection + deblending masker.

    detect : :class:`DetectConfig` (threshold in sigma, deblending, central-object search).
    dilate : base growth of contaminant segments in pixels (>= 0; default 2).
    """

    name = "sep"

    def __init__(self, detect: DetectConfig | None = None, dilate: int = 2):
        if int(dilate) < 0:
            raise ValueError(f"dilate must be >= 0 pixels, got {dilate}")
        self.detect_config = detect or DetectConfig()
        self.dilate = int(dilate)

    def __call__(self, cutout) -> MaskResult:
        # the sky in cutout.meta["sky"] (measured by the noise step) is subtracted for detection
        det = detect(cutout.image, cutout.sigma, cutout.mask, self.detect_config,
            cutout.meta.get("sky"))
        # a central below MIN_CENTRAL_SNR is flagged but kept unmasked: it may be a faint target
        flags = 0 if det.central_detected else int(Flag.NO_CENTRAL_DETECTION)
        mask = contaminant_mask(det.segmap, det.objects, det.central, self.dilate) & ~cutout.mask
        columns = {
            "mask_n_objects": det.n_objects,
            "mask_n_masked": int(mask.sum()),
            "mask_frac": float(np.mean(mask | cutout.mask)),
            "mask_central_snr": det.central_snr,
            "sky_level": det.sky.level,
            "sky_rms": det.sky.rms,
        }
        if np.all(mask | cutout.mask):
            # Keeping the galaxy fittable matters more than the contaminants.
            return MaskResult(mask=np.zeros_like(mask), flags=flags | int(Flag.MASK_FAILED),
                              columns=columns | {"mask_n_masked": 0}, detection=det, method="sep")
        return MaskResult(mask=mask, flags=flags, columns=columns, detection=det, method="sep")
