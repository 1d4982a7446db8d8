"""What ``galmoss-auto run INPUT`` accepts, turned into one record (dict) per galaxy.

INPUT is one of
* a manifest table (``.csv``, ``.ecsv``, ``.fits``/``.fit``) with columns ``id, image`` and
  optionally ``sigma`` (or ``weight`` / ``variance``), ``psf``, ``mask``, ``zeropoint``,
  ``pixel_scale``, ``gain``.  Relative paths are relative to the manifest's folder; empty
  cells mean "not given";
* a directory: every ``*.fits``, ``*.fit``, ``*.fits.gz`` inside (not recursive);
* a glob pattern such as ``"cutouts/*_r.fits"``.

For directories and globs the id is the file name without extension, and companion files
beside an image ``NAME.fits`` are used when present: ``NAME_sigma``, ``NAME_weight``,
``NAME_var``, ``NAME_psf``, ``NAME_mask`` (same extension); they are not images themselves.

Values missing from a record are filled from the run's defaults (``--psf``, ``--zeropoint``,
``--pixel-scale``, ``--gain``, then the ``--survey`` preset).  Records hold paths, never
pixels, so 100,000 of them are a few tens of MB.
"""

from __future__ import annotations

import glob as globmod
import math
import re
from pathlib import Path

__all__ = ["InputError", "read_inputs", "apply_defaults", "MANIFEST_SUFFIXES", "COMPANIONS"]

MANIFEST_SUFFIXES = (".csv", ".ecsv", ".fits", ".fit", ".fits.gz")
#: companion-file suffix -> record key
COMPANIONS = {"_sigma": "sigma", "_weight": "weight", "_var": "variance", "_psf": "psf",
              "_mask": "mask"}
PATH_KEYS = ("image", "sigma", "weight", "variance", "psf", "mask")
NUMBER_KEYS = ("zeropoint", "pixel_scale", "gain")
_IMAGE_RE = re.compile(r"\.(fits|fit|fits\.gz|fit\.gz)$", re.IGNORECASE)


class InputError(ValueError):
    """The run's input cannot be used; the message names the file and the problem."""


def _is_table(path: Path) -> bool:
    if path.suffix.lower() in (".csv", ".ecsv"):
        return True
    if _IMAGE_RE.search(path.name):
        # A FITS file is a manifest when its first extension is a table.
        from astropy.io import fits
        try:
            with fits.open(path, memmap=False) as hdul:
                return len(hdul) > 1 and isinstance(hdul[1], (fits.BinTableHDU, fits.TableHDU))
        except Exception as exc:
            raise InputError(f"{path}: cannot open as FITS ({type(exc).__name__}: {exc})") from None
    return False


def _blank(value) -> bool:
    if value is None:
        return True
    if hasattr(value, "mask") and bool(getattr(value, "mask", False)):
        return True
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def read_manifest(path: Path) -> list[dict]:
    """Records from a manifest table; raises :class:`InputError` naming the file."""
    from astropy.table import Table
    try:
        if path.suffix.lower() == ".csv":
            from astropy.io.ascii import convert_numpy
            # ids stay text: "007" must not become 7
            table = Table.read(path, format="ascii.csv", converters={"id": [convert_numpy(str)]})
        else:
            table = Table.read(path)
    except Exception as exc:
        raise InputError(f"{path}: cannot read the manifest ({type(exc).__name__}: {exc})") from None
    missing = [c for c in ("id", "image") if c not in table.colnames]
    if missing:
        raise InputError(f"{path}: manifest lacks required column(s) {missing}; "
                         f"it has {table.colnames}")
    base = path.parent
    records = []
    for i, row in enumerate(table):
        rec = {"id": str(row["id"]).strip()}
        if _blank(row["id"]) or rec["id"] == "":
            raise InputError(f"{path}: row {i + 1} has an empty id")
        for key in PATH_KEYS:
            if key in table.colnames and not _blank(row[key]):
                p = Path(str(row[key]).strip())
                rec[key] = str(p if p.is_absolute() else base / p)
        if "image" not in rec:
            raise InputError(f"{path}: row {i + 1} (id {rec['id']!r}) has no image")
        for key in NUMBER_KEYS:
            if key in table.colnames and not _blank(row[key]):
                try:
                    rec[key] = float(row[key])
                except (TypeError, ValueError):
                    raise InputError(f"{path}: row {i + 1} (id {rec['id']!r}): {key} = "
                                     f"{row[key]!r} is not a number") from None
        records.append(rec)
    return records


def _stem(path: Path) -> str:
    return _IMAGE_RE.sub("", path.name)


def records_from_files(files: list[Path], where: str) -> list[dict]:
    """Records from image files, attaching companion files found beside them."""
    files = sorted({f.resolve() for f in files})
    companions = set()
    records = []
    for f in files:
        stem, ext = _stem(f), f.name[len(_stem(f)):]
        rec = {"id": stem, "image": str(f)}
        for suffix, key in COMPANIONS.items():
            cand = f.with_name(stem + suffix + ext)
            if cand.is_file():
                rec[key] = str(cand)
                companions.add(cand.name)
        records.append(rec)
    records = [r for r in records if Path(r["image"]).name not in companions]
    if not records:
        raise InputError(f"{where}: no FITS images found")
    return records


def check_unique(records: list[dict], where: str) -> None:
    seen, dups = set(), set()
    for r in records:
        (dups if r["id"] in seen else seen).add(r["id"])
    if dups:
        raise InputError(f"{where}: ids must be unique; repeated: {sorted(dups)[:10]}")


def read_inputs(source, defaults: dict | None = None) -> list[dict]:
    """Records for ``source`` (manifest, directory or glob; see the module docstring), with
    ``defaults`` (keys ``psf``, ``zeropoint``, ``pixel_scale``, ``gain``, ...) filling what a
    record lacks.  Raises :class:`InputError`."""
    text = str(source)
    path = Path(text)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and _IMAGE_RE.search(p.name)]
        records = records_from_files(files, text)
    elif path.is_file():
        records = read_manifest(path) if _is_table(path) else records_from_files([path], text)
    elif any(ch in text for ch in "*?["):
        files = [Path(p) for p in globmod.glob(text) if _IMAGE_RE.search(p)]
        records = records_from_files(files, text)
    else:
        raise InputError(f"{text}: no such file, directory or glob match")
    check_unique(records, text)
    return apply_defaults(records, defaults)


def apply_defaults(records: list[dict], defaults: dict | None) -> list[dict]:
    """Fill keys a record lacks (or has as None) from ``defaults``; in place, returned."""
    for rec in records:
        for key, value in (defaults or {}).items():
            if value is not None and rec.get(key) is None:
                rec[key] = value
    return records
