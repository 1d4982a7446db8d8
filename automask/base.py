"""The masker stage's interface and the registry behind ``--mask``.

A masker takes a :class:`~galmoss_auto.fitting.cutout.Cutout` (whose ``mask`` already holds the
user's mask and the unusable pixels) and returns a :class:`MaskResult`: the pixels *it* masks
(contaminants), flags, and ``mask_*`` catalog columns that show what it did.  The pipeline ORs
the result into the cutout's mask.  A masker may hand back its sep :class:`Detection` so that
the initializer does not detect the same cutout twice.

Registered names: ``sep`` (the default) and ``none`` (user mask and bad pixels only).  A
learned masker (Mask R-CNN) registers itself here under its own name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from galmoss_auto.automask.detect import Detection

__all__ = ["MaskResult", "Masker", "NoMasker", "MASKERS", "register_masker", "get_masker"]


@dataclass
class MaskResult:
    """What a masker did to one cutout.

    mask : bool (H, W), True = masked by this stage (not including the user's mask).
    flags : bits of :class:`~galmoss_auto.fitting.flags.Flag` (e.g. MASK_FAILED).
    columns : catalog columns named ``mask_*`` (scalars).
    detection : the sep detection, when the masker ran one (reused by the sep initializer).
    """

    mask: np.ndarray
    flags: int = 0
    columns: dict = field(default_factory=dict)
    detection: Detection | None = None


class Masker(Protocol):
    """``masker(cutout) -> MaskResult``; must be picklable (it runs in DataLoader workers)."""

    name: str

    def __call__(self, cutout) -> MaskResult: ...


class NoMasker:
    """``--mask none``: masks nothing beyond the user's mask and the unusable pixels."""

    name = "none"

    def __call__(self, cutout) -> MaskResult:
        mask = np.zeros(cutout.image.shape, bool)
        return MaskResult(mask=mask, columns={"mask_n_objects": -1, "mask_n_masked": 0,
                                              "mask_frac": float(np.mean(cutout.mask))})


def _sep_masker(**options):
    from galmoss_auto.automask.sep_masker import SepMasker
    return SepMasker(**options)


MASKERS: dict[str, Callable[..., Masker]] = {"sep": _sep_masker, "none": lambda **_: NoMasker()}


def register_masker(name: str, factory: Callable[..., Masker]) -> None:
    """Make ``--mask NAME`` build ``factory(**options)``."""
    MASKERS[name] = factory


def get_masker(name: str, **options) -> Masker:
    """The masker registered as ``name`` (``sep`` or ``none``), built with ``options``."""
    if name not in MASKERS:
        raise ValueError(f"unknown masker {name!r}; choose one of {sorted(MASKERS)}")
    return MASKERS[name](**options)
