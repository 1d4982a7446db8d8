"""The masker stage's interface and the registry behind ``--mask``.

A masker takes a :class:`~galmoss_auto.fitting.cutout.Cutout` (whose ``mask`` already holds the
user's mask and the unusable pixels) and returns a :class:`MaskResult`: the pixels *it* masks
(contaminants), flags, and ``mask_*`` catalog columns that show what it did.  The pipeline ORs
the result into the cutout's mask.  A masker may hand back its sep :class:`Detection` so that
the initializer does not detect the same cutout twice.

Registered names: ``sep`` and ``none`` (user mask and bad pixels only).  A learned masker
(Mask R-CNN) registers itself here under its own name with ``register_masker(name, factory)``;
``factory(checkpoint=PATH, **options)``.

Two kinds of masker:

* per cutout (:class:`Masker`): ``masker(cutout) -> MaskResult``, picklable; the pipeline runs
  it inside DataLoader workers;
* batched (:class:`BatchMasker`, attribute ``batched = True``):
  ``masker.mask_batch(cutouts, device) -> list[MaskResult]``, run in the main process on a
  whole chunk (on the GPU when present).  Its cutouts already hold the user mask and bad pixels
  in ``cutout.mask``, a sigma map (estimated if none was given), and the measured sky in
  ``cutout.meta["sky"]`` (a :class:`~galmoss_auto.fitting.noise.SkyEstimate`; the image itself
  still contains it unless ``run --sky subtract``).  If the call raises, the pipeline masks
  that chunk with sep instead and flags MASK_FAILED.

A MaskResult may list :class:`Neighbour` objects: sources overlapping the central galaxy that
should be fitted with it rather than masked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from galmoss_auto.automask.detect import Detection

__all__ = ["Neighbour", "MaskResult", "initializer_view", "Masker", "BatchMasker", "NoMasker", "MASKERS",
           "register_masker", "get_masker", "is_batched"]


@dataclass
class Neighbour:
    """A source to fit together with the central galaxy.

    kind : ``"galaxy"`` (a Sérsic component) or ``"star"`` (a point source).
    params : starting values in catalog conventions: ``x``, ``y`` (1-based pixels), ``mag``;
        for galaxies also ``r_e`` (major-axis px), ``n``, ``q`` (b/a), ``pa`` (deg CCW from +y).
    label : the masker's instance label (0 when it has none).
    """

    kind: str
    params: dict
    label: int = 0

    def __post_init__(self):
        if self.kind not in ("galaxy", "star"):
            raise ValueError(f"neighbour kind must be 'galaxy' or 'star', got {self.kind!r}")
        need = ("x", "y", "mag") + (("r_e", "n", "q", "pa") if self.kind == "galaxy" else ())
        missing = [k for k in need if k not in self.params]
        if missing:
            raise ValueError(f"{self.kind} neighbour lacks {missing}")


@dataclass
class MaskResult:
    """What a masker did to one cutout.

    mask : bool (H, W), True = masked by this stage (not including the user's mask).
    flags : bits of :class:`~galmoss_auto.fitting.flags.Flag` (e.g. MASK_FAILED).
    columns : catalog columns named ``mask_*`` (scalars).
    detection : the sep detection, when the masker ran one (reused by the sep initializer).
    neighbours : sources to fit with the central galaxy instead of masking them.
    method : the masker that made this result (``"sep"``, ``"maskrcnn"``, ...); written to the
        catalog's ``mask_method`` column (the pipeline fills it from the masker's name if empty).
    neighbour_pixels : bool (H, W) or None: the modelled neighbours' own pixels (outside the
        central's footprint).  They stay in the fit, but the initializer must not take them for
        the target's light (see :func:`initializer_view`).
    """

    mask: np.ndarray
    flags: int = 0
    columns: dict = field(default_factory=dict)
    detection: Detection | None = None
    neighbours: list = field(default_factory=list)
    method: str = ""
    neighbour_pixels: np.ndarray | None = None


def initializer_view(cutout, neighbour_pixels: np.ndarray | None):
    """The cutout as the initializer sees it: its mask plus ``neighbour_pixels`` (a masker's
    modelled neighbours).  A neighbour is fitted with the target, so its pixels are not masked
    for the fit; but an initializer that measured them would take a bright neighbour for the
    target (sep picks the brightest segment near the centre) or add its light to the target's
    size and magnitude.  Returns ``cutout`` itself when there is nothing to hide."""
    if neighbour_pixels is None or not np.any(neighbour_pixels):
        return cutout
    from dataclasses import replace
    return replace(cutout, mask=np.asarray(cutout.mask, bool) | np.asarray(neighbour_pixels, bool))


class Masker(Protocol):
    """``masker(cutout) -> MaskResult``; must be picklable (it runs in DataLoader workers)."""

    name: str

    def __call__(self, cutout) -> MaskResult: ...


class BatchMasker(Protocol):
    """``masker.mask_batch(cutouts, device) -> list[MaskResult]`` (one per cutout, in order);
    ``batched = True``.  Runs in the main process."""

    name: str
    batched: bool

    def mask_batch(self, cutouts: list, device) -> list[MaskResult]: ...


def is_batched(stage) -> bool:
    """True for a batched masker or initializer (attribute ``batched`` true)."""
    return bool(getattr(stage, "batched", False))


class NoMasker:
    """``--mask none``: masks nothing beyond the user's mask and the unusable pixels."""

    name = "none"

    def __call__(self, cutout) -> MaskResult:
        mask = np.zeros(cutout.image.shape, bool)
        return MaskResult(mask=mask, columns={"mask_n_objects": -1, "mask_n_masked": 0,
                                              "mask_frac": float(np.mean(cutout.mask))},
                          method="none")


def _sep_masker(**options):
    from galmoss_auto.automask.sep_masker import SepMasker
    return SepMasker(**options)


MASKERS: dict[str, Callable[..., Masker]] = {"sep": _sep_masker, "none": lambda **_: NoMasker()}


def register_masker(name: str, factory: Callable[..., Masker]) -> None:
    """Make ``--mask NAME`` build ``factory(**options)`` (a learned masker's factory takes
    ``checkpoint=PATH``)."""
    MASKERS[name] = factory


def get_masker(name: str, **options) -> Masker:
    """The masker registered as ``name`` (``sep`` or ``none``), built with ``options``."""
    if name not in MASKERS:
        raise ValueError(f"unknown masker {name!r}; choose one of {sorted(MASKERS)}")
    return MASKERS[name](**options)
