"""Which checkpoint a stage uses for a survey and band, and whether it suits the cutouts.

Order (first hit wins): ``weights`` (a registry NAME or a checkpoint FILE) > ``zoo`` folder >
cache (``$GALMOSS_AUTO_HOME``) > shipped (package data).  Within each source an entry made for the
exact survey and band wins, then the highest version; entries with survey or band ``"*"`` are
taken only when no source has an exact one.  Nothing here touches the network.
"""

from __future__ import annotations

import math

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint import load_checkpoint, read_entry, sha256_file
from .registry import STAGES, RegistryError, catalogue, find, matches, validate_entry, version_key

__all__ = ["ResolvedCheckpoint", "ResolveError", "CompatibilityError", "resolve_checkpoint",
           "training_range", "PIXEL_SCALE_TOLERANCE",
           "check_compatibility", "require_compatible"]

ORIGINS = ("zoo", "cache", "shipped")


class ResolveError(ValueError):
    """A ``weights`` choice that cannot be used (unknown, not installed, or for another stage)."""


class CompatibilityError(ValueError):
    """Cutouts outside the range a checkpoint was trained for (raised only when strict)."""


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A checkpoint picked for a stage.

    ``origin``: "zoo" | "cache" | "shipped" | "file".  ``sha256`` is the hash the file must have;
    :meth:`load` refuses a file that differs.
    """
    name: str
    path: Path
    sha256: str
    entry: dict = field(repr=False)
    origin: str

    def load(self, device="cpu", with_reference: bool = False):
        """``(state_dict, entry)`` (hash-checked, never unpickled); see ``load_checkpoint``."""
        return load_checkpoint(self.path, self.sha256, device=device, with_reference=with_reference)

    def record(self) -> dict:
        """What ``run.json`` keeps about it."""
        return {"name": self.name, "sha256": self.sha256, "origin": self.origin,
                "path": str(self.path), "version": self.entry.get("version"),
                "stage": self.entry.get("stage")}


def _looks_like_file(weights) -> bool:
    s = str(weights)
    return isinstance(weights, Path) or s.endswith(".safetensors") or os.sep in s or Path(s).is_file()


def _from_file(stage: str, path: Path) -> ResolvedCheckpoint:
    if not path.is_file():
        raise ResolveError(f"--weights {path}: no such file")
    entry = dict(read_entry(path), file=path.name)
    entry.setdefault("urls", [])
    try:
        entry = validate_entry(entry, str(path))
    except RegistryError as exc:
        raise ResolveError(str(exc)) from exc
    if entry["stage"] != stage:
        raise ResolveError(f"--weights {path}: a {entry['stage']} checkpoint, not {stage}")
    sha = sha256_file(path)
    entry["sha256"], entry["size"] = sha, path.stat().st_size
    return ResolvedCheckpoint(entry["name"], path, sha, entry, "file")


def _from_name(stage: str, name: str, zoo) -> ResolvedCheckpoint:
    try:
        loc = find(name, zoo)
    except RegistryError as exc:
        raise ResolveError(str(exc)) from exc
    if loc.entry["stage"] != stage:
        raise ResolveError(f"--weights {name}: a {loc.entry['stage']} checkpoint, not {stage}")
    if not loc.installed:
        raise ResolveError(f"--weights {name}: not installed ({loc.path} is absent); run "
                           f"`galmoss-auto weights download {name}`")
    return _resolved(loc)


def _resolved(loc) -> ResolvedCheckpoint:
    sha = loc.entry.get("sha256")
    if not sha:
        raise ResolveError(f"{loc.registry}: entry {loc.name!r} has no sha256; it cannot be checked")
    return ResolvedCheckpoint(loc.name, loc.path, sha, loc.entry, loc.origin)


def resolve_checkpoint(stage: str, survey: str | None, band: str | None, *, zoo=None,
                       weights=None) -> ResolvedCheckpoint | None:
    """The checkpoint ``stage`` ("automask" | "initnet") uses for ``survey``/``band``, or None.

    ``weights``: a registry name or a ``.safetensors`` path that overrides the search.  ``zoo``: a
    folder written by ``write_zoo_entry`` (searched before the cache and the shipped defaults).
    Only installed files are considered; the file's hash is checked when it is loaded.
    Raises :class:`ResolveError` for an unusable ``weights``.
    """
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is not one of {', '.join(STAGES)}")
    if weights is not None and str(weights) != "":
        if _looks_like_file(weights):
            return _from_file(stage, Path(weights).expanduser())
        return _from_name(stage, str(weights), zoo)
    located = [loc for loc in catalogue(zoo) if loc.installed]
    for score in (2, 1):
        for origin in ORIGINS:
            hits = [loc for loc in located if loc.origin == origin
                    and matches(loc.entry, stage, survey, band) == score]
            if hits:
                best = max(hits, key=lambda loc: (version_key(loc.entry["version"]), loc.name))
                return _resolved(best)
    return None



#: Relative tolerance on the pixel scale a checkpoint was simulated at.  Scales read from a real
#: cutout's WCS differ from the survey's nominal one by ~0.1%, resampled mosaics by a few per
#: cent; what the networks are sensitive to (the PSF and galaxy sizes in pixels) is checked
#: through the PSF range.
PIXEL_SCALE_TOLERANCE = 0.05


def training_range(survey, bands) -> dict:
    """The ``trained_for`` ranges of a checkpoint simulated from a survey preset.

    ``survey``: a :class:`galmoss_auto.data_scripts.surveys.Survey` (a built-in preset or one
    read from a TOML file); ``bands``: the bands the checkpoint serves.  Returns
    ``pixel_scale`` [lo, hi] (arcsec/px, the preset's within :data:`PIXEL_SCALE_TOLERANCE`) and
    ``psf_fwhm_arcsec`` [lo, hi]: the narrowest served band's median seeing divided by
    exp(3 s), the widest one's multiplied by it (s: the preset's log-normal FWHM scatter; the
    simulator draws seeing from that distribution, so the training set reaches about this far:
    0.13% of its cutouts lie beyond each end).
    """
    fwhm = [survey.band(b).psf_fwhm for b in bands]
    k = math.exp(3.0 * survey.psf_fwhm_scatter)
    ps = float(survey.pixel_scale)
    return {"pixel_scale": [round(ps / (1 + PIXEL_SCALE_TOLERANCE), 5),
                            round(ps * (1 + PIXEL_SCALE_TOLERANCE), 5)],
            "psf_fwhm_arcsec": [round(min(fwhm) / k, 3), round(max(fwhm) * k, 3)]}

def _span(values):
    """(min, max) of a scalar or a sequence/array, ignoring None and non-finite values."""
    if values is None:
        return None
    try:
        arr = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        return None
    arr = arr[np.isfinite(arr)]
    return (float(arr.min()), float(arr.max())) if arr.size else None


def check_compatibility(entry: dict, pixel_scale=None, psf_fwhm_arcsec=None, size=None) -> list[str]:
    """Problems using a checkpoint on these cutouts; empty when they are inside its training range.

    Parameters
    ----------
    entry : dict
        Registry entry; its ``trained_for`` holds ``pixel_scale`` [lo, hi] (arcsec/px),
        ``psf_fwhm_arcsec`` [lo, hi] and ``size`` [lo, hi] (cutout side, px).  A range it lacks is
        not checked.
    pixel_scale, psf_fwhm_arcsec : float or sequence, optional
        Of the cutouts (one value or one per cutout); None = unknown, not checked.
    size : int, (height, width), or a sequence of those, optional
        Cutout sides in px; every side is checked.
    """
    trained = entry.get("trained_for") or {}
    name = entry.get("name", "checkpoint")
    problems = []
    for key, values, unit, label in (("pixel_scale", pixel_scale, " arcsec/px", "pixel scale"),
                                     ("psf_fwhm_arcsec", psf_fwhm_arcsec, '"', "PSF FWHM"),
                                     ("size", size, " px", "cutout size")):
        rng, span = trained.get(key), _span(values)
        if not rng or span is None:
            continue
        lo, hi = rng
        if span[0] < lo or span[1] > hi:
            have = f"{span[0]:g}{unit}" if span[0] == span[1] else f"{span[0]:g}-{span[1]:g}{unit}"
            problems.append(f"{label} {have} is outside the range [{lo:g}, {hi:g}]{unit} that "
                            f"{name} was trained for")
    return problems


def require_compatible(entry: dict, pixel_scale=None, psf_fwhm_arcsec=None, size=None) -> None:
    """:func:`check_compatibility`, raising :class:`CompatibilityError` on any problem (``--strict``)."""
    problems = check_compatibility(entry, pixel_scale, psf_fwhm_arcsec, size)
    if problems:
        raise CompatibilityError("; ".join(problems) + " (refused under --strict)")

