"""The initializer stage's interface and the registry behind ``--init``.

An initializer takes a :class:`~galmoss_auto.fitting.cutout.Cutout` (masks applied) and
optionally the sep :class:`~galmoss_auto.automask.detect.Detection` the masker already made,
and returns an :class:`InitResult`: starting values for one Sérsic component in the catalog's
conventions (x, y 1-based pixels; mag; r_e major-axis pixels; n; q = b/a; pa degrees CCW
from +y in (-90, 90]), flags, and extra ``init_*`` columns.

Registered names: ``sep`` (moments).  ``--init PATH`` (a catalog file) builds a
:class:`~galmoss_auto.initnet.catalog_init.CatalogInitializer`.  A learned initializer registers
itself here with ``register_initializer(name, factory)``; ``factory(checkpoint=PATH, **options)``.

Two kinds of initializer:

* per cutout (:class:`Initializer`): ``initializer(cutout, detection=None) -> InitResult``,
  picklable, run inside DataLoader workers;
* batched (:class:`BatchInitializer`, ``batched = True``):
  ``initializer.init_batch(cutouts, device) -> list[InitResult]``, run in the main process on
  a whole chunk after the masker (``cutout.mask`` already includes the masker's mask; the
  measured sky is in ``cutout.meta["sky"]``).  A prediction outside the physical ranges falls
  back to sep inside ``init_batch`` (Flag.INIT_FALLBACK, ``init_method="sep"``); if the call
  raises, the pipeline uses sep for the chunk and flags INIT_FALLBACK.

``InitResult.columns`` may carry ``init_sersic_<p>_err`` (catalog units) and ``init_method``
(the pipeline fills ``init_method`` from the initializer's name when it is absent).  Starting
values describe the galaxy alone: an initializer subtracts the sky (``cutout.meta["sky"]``)
before it measures fluxes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from galmoss_auto.initnet.conventions import mag_from_flux

__all__ = ["PARAMS", "InitResult", "Initializer", "BatchInitializer", "fallback_guess",
           "INITIALIZERS", "register_initializer", "get_initializer"]

#: The Sérsic parameters an initializer provides, in catalog order.
PARAMS = ("x", "y", "mag", "r_e", "n", "q", "pa")


@dataclass
class InitResult:
    """Starting values for one Sérsic component (keys of :data:`PARAMS`), flags, columns."""

    params: dict
    flags: int = 0
    columns: dict = field(default_factory=dict)

    def __post_init__(self):
        missing = [p for p in PARAMS if p not in self.params]
        if missing:
            raise ValueError(f"initial guess lacks {missing}")


class Initializer(Protocol):
    """``initializer(cutout, detection=None) -> InitResult``; picklable (runs in workers)."""

    name: str

    def __call__(self, cutout, detection=None) -> InitResult: ...


class BatchInitializer(Protocol):
    """``initializer.init_batch(cutouts, device) -> list[InitResult]`` (one per cutout, in
    order); ``batched = True``.  Runs in the main process."""

    name: str
    batched: bool

    def init_batch(self, cutouts: list, device) -> list[InitResult]: ...


def fallback_guess(cutout) -> dict:
    """A generic start when nothing was measured: the cutout centre, the total unmasked flux
    above the measured sky (``cutout.meta["sky"]``, when present), r_e = a tenth of the smaller
    side (>= 1 px), n = 1, q = 0.8, pa = 0."""
    h, w = cutout.image.shape
    sky = cutout.meta.get("sky") if hasattr(cutout, "meta") else None
    level = float(getattr(sky, "level", 0.0) or 0.0)
    flux = float(np.sum(np.where(cutout.mask, 0.0, cutout.image - level)))
    mag = float(mag_from_flux(flux, cutout.zeropoint))
    if not np.isfinite(mag):
        # Non-positive total flux: a source at the 1-sigma level of the whole cutout.
        noise = float(np.median(cutout.sigma)) if cutout.sigma is not None else 1.0
        mag = float(mag_from_flux(noise * np.sqrt(h * w), cutout.zeropoint))
    return {"x": (w + 1) / 2.0, "y": (h + 1) / 2.0, "mag": mag, "r_e": max(1.0, min(h, w) / 10.0),
            "n": 1.0, "q": 0.8, "pa": 0.0}


def _sep_initializer(**options):
    from galmoss_auto.initnet.sep_init import SepInitializer
    return SepInitializer(**options)


INITIALIZERS: dict[str, Callable[..., Initializer]] = {"sep": _sep_initializer}


def register_initializer(name: str, factory: Callable[..., Initializer]) -> None:
    """Make ``--init NAME`` build ``factory(**options)`` (a learned initializer's factory
    takes ``checkpoint=PATH``)."""
    INITIALIZERS[name] = factory


def get_initializer(name: str, **options) -> Initializer:
    """The initializer registered as ``name``, or a catalog initializer when ``name`` is the
    path of an existing catalog file (FITS, ECSV or CSV with ``id`` and ``sersic_*``)."""
    if name in INITIALIZERS:
        return INITIALIZERS[name](**options)
    from pathlib import Path
    if Path(name).is_file():
        from galmoss_auto.initnet.catalog_init import CatalogInitializer
        return CatalogInitializer(name, **options)
    raise ValueError(f"unknown initializer {name!r}; choose one of {sorted(INITIALIZERS)} "
                     "or give the path of a catalog file")
