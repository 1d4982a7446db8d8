"""The initializer stage's interface and the registry behind ``--init``.

An initializer takes a :class:`~galmoss_auto.fitting.cutout.Cutout` (masks applied) and
optionally the sep :class:`~galmoss_auto.automask.detect.Detection` the masker already made,
and returns an :class:`InitResult`: starting values for one Sérsic component in the catalog's
conventions (x, y 1-based pixels; mag; r_e major-axis pixels; n; q = b/a; pa degrees CCW
from +y in (-90, 90]), flags, and extra ``init_*`` columns.

Registered names: ``sep`` (moments, the default).  ``--init PATH`` (a catalog file) builds a
:class:`~galmoss_auto.initnet.catalog_init.CatalogInitializer`.  A learned initializer registers
itself here under its own name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from galmoss_auto.initnet.conventions import mag_from_flux

__all__ = ["PARAMS", "InitResult", "Initializer", "fallback_guess", "INITIALIZERS",
           "register_initializer", "get_initializer"]

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


def fallback_guess(cutout) -> dict:
    """A generic start when nothing was measured: the cutout centre, the total unmasked flux,
    r_e = a tenth of the smaller side (>= 1 px), n = 1, q = 0.8, pa = 0."""
    h, w = cutout.image.shape
    flux = float(np.sum(np.where(cutout.mask, 0.0, cutout.image)))
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
    """Make ``--init NAME`` build ``factory(**options)``."""
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
