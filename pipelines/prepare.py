"""Everything the pipeline does to one galaxy before the fit, run inside DataLoader workers:
noise estimation where no sigma map was given, the masker, the initializer.

A stage that fails on one galaxy never stops it: a failing masker leaves the user's mask
(``MASK_FAILED``), a failing initializer leaves a generic start (``INIT_FALLBACK``), and the
reason goes to the ``message`` column.  Only an unusable cutout (e.g. an empty image) becomes a
:class:`~galmoss_auto.fitting.dataset.CutoutFailure`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from galmoss_auto.automask.detect import estimate_sky
from galmoss_auto.fitting.cutout import Cutout, CutoutError
from galmoss_auto.fitting.dataset import CutoutFailure
from galmoss_auto.fitting.flags import Flag
from galmoss_auto.initnet.base import InitResult, fallback_guess

__all__ = ["Prepared", "Preparer", "estimate_sigma"]


def estimate_sigma(cutout: Cutout, gain: float | None) -> tuple[np.ndarray, dict]:
    """1-sigma map from the image: the sky RMS measured off the sources, plus Poisson noise
    of the sky-subtracted signal ``max(image - sky, 0) / gain`` when ``gain`` (e-/image unit,
    > 0) is known.  Returns the map and ``sky_level`` / ``sky_rms`` columns."""
    if gain is not None and not gain > 0:
        raise CutoutError(f"{cutout.source}: gain must be > 0 e-/unit, got {gain}")
    sky = estimate_sky(cutout.image, cutout.mask)
    cutout.meta["sky"] = sky          # the sep masker reuses it instead of measuring again
    var = np.full(cutout.image.shape, sky.rms ** 2)
    if gain is not None:
        var = var + np.clip(cutout.image - sky.level, 0.0, None) / gain
    return np.sqrt(var), {"sky_level": sky.level, "sky_rms": sky.rms}


@dataclass
class Prepared:
    """A galaxy ready to fit: the cutout (mask = input mask OR masker's), the masker's own
    mask, the initial guess, pipeline flags, ``columns`` for the catalog, stage timings (s)."""

    cutout: Cutout
    auto_mask: np.ndarray
    init: InitResult
    flags: int = 0
    columns: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.cutout.id


class Preparer:
    """Picklable per-galaxy transform: ``preparer(cutout) -> Prepared | CutoutFailure``."""

    def __init__(self, masker, initializer):
        self.masker = masker
        self.initializer = initializer

    def __call__(self, cutout: Cutout):
        timings = dict(cutout.meta.get("timings", {}))
        flags = int(cutout.flags)
        messages = []
        columns = {"sigma_estimated": False}
        good = cutout.image[~cutout.mask]
        if good.size and np.ptp(good) == 0:
            return CutoutFailure(cutout.id, f"{cutout.source}: empty cutout (every unmasked pixel "
                                 f"equals {good.flat[0]:g})", cutout.source, timings)
        if cutout.n_bad_pixels:
            flags |= Flag.AUTO_MASKED_PIXELS

        t0 = time.perf_counter()
        if cutout.sigma is None:
            try:
                cutout.sigma, sky_cols = estimate_sigma(cutout, cutout.meta.get("gain"))
            except (CutoutError, ValueError) as exc:
                return CutoutFailure(cutout.id, f"{cutout.source}: cannot estimate sigma: {exc}",
                                     cutout.source, timings)
            columns |= sky_cols | {"sigma_estimated": True}
            flags |= Flag.SIGMA_ESTIMATED
        timings["sigma"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        detection = None
        auto = np.zeros(cutout.image.shape, bool)
        try:
            res = self.masker(cutout)
            auto, detection = res.mask & ~cutout.mask, res.detection
            flags |= res.flags
            columns |= res.columns
        except Exception as exc:  # a masker bug or sep failure costs this galaxy its auto-mask only
            flags |= Flag.MASK_FAILED
            messages.append(f"masker {getattr(self.masker, 'name', '?')} failed: "
                            f"{type(exc).__name__}: {exc}")
        input_mask = cutout.mask
        cutout.mask = input_mask | auto
        timings["mask"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        try:
            init = self.initializer(cutout, detection)
        except Exception as exc:  # same rule for the initializer: fall back, flag, say why
            init = InitResult(fallback_guess(cutout), int(Flag.INIT_FALLBACK))
            messages.append(f"initializer {getattr(self.initializer, 'name', '?')} failed: "
                            f"{type(exc).__name__}: {exc}")
        flags |= init.flags
        columns |= init.columns
        timings["init"] = time.perf_counter() - t0
        columns["message"] = "; ".join(messages)
        # The detection holds full-size arrays; dropping it keeps worker->main transfers small.
        return Prepared(cutout=cutout, auto_mask=auto, init=init, flags=int(flags),
                        columns=columns, timings=timings)
