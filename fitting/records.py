"""What ``galmoss-auto run`` and ``galmoss-auto fit`` accept, turned into one record (dict) per
galaxy.  One module for both commands, so they read the same input the same way.

A source is one of
* a manifest table (``.csv``, ``.ecsv``, ``.fits``/``.fit`` whose first extension is a table)
  with columns ``id, image`` and optionally ``sigma`` (or ``weight`` / ``variance``), ``psf``,
  ``mask``, ``zeropoint``, ``pixel_scale``, ``gain``, ``saturation``, ``psf_oversampling``
  (PSF pixels per image pixel, a positive integer; default 1), ``psf_x``, ``psf_y`` (where a
  PSFEx ``psf`` model is evaluated: the galaxy's 1-based pixel in the image the model was
  built on).  Relative paths are
  relative to the manifest's folder; empty cells mean "not given";
* a directory: every ``*.fits``, ``*.fit``, ``*.fts`` inside, also compressed (``.gz``,
  ``.bz2``, ``.fz``) (not recursive);
* a glob pattern such as ``"cutouts/*_r.fits"``.

For directories and globs the id is the file name without extension, and companion files
beside an image ``NAME.fits`` are used when present: ``NAME_sigma``, ``NAME_weight``,
``NAME_var``, ``NAME_psf``, ``NAME_mask`` (same extension); they are not images themselves.

A record holds paths and numbers, never pixels.  Its keys: ``id``, ``image`` and the optional
keys above; ``sources`` (key -> where the value came from: ``"manifest"`` or ``"file"`` for a
companion file); ``defaults`` (key -> (value, source) from the command's options
(``"option"``), a feedme (``"feedme"``) or a survey preset (``"survey"``): used only when
neither the record nor the image file itself (its extensions and header) gives the value, see
:func:`galmoss_auto.fitting.cutout.read_record`); ``error`` (a message: this row alone is
unusable, e.g. a non-numeric zero-point; it becomes a BAD_INPUT row, the others go on).
"""

from __future__ import annotations

import glob as globmod
import math
import re
from pathlib import Path

__all__ = ["InputError", "read_inputs", "read_manifest", "read_table", "records_from_files", "apply_defaults",
           "check_unique", "MANIFEST_SUFFIXES", "COMPANIONS", "PATH_KEYS", "NUMBER_KEYS",
           "IMAGE_RE"]

MANIFEST_SUFFIXES = (".csv", ".ecsv", ".fits", ".fit", ".fits.gz")
#: companion-file suffix -> record key
COMPANIONS = {"_sigma": "sigma", "_weight": "weight", "_var": "variance", "_psf": "psf",
              "_mask": "mask"}
PATH_KEYS = ("image", "sigma", "weight", "variance", "psf", "mask")
NUMBER_KEYS = ("zeropoint", "pixel_scale", "gain", "saturation", "psf_oversampling", "psf_x", "psf_y")
#: A FITS image's name: .fits, .fit or .fts, optionally gzip- (.gz), bzip2- (.bz2: SDSS frames)
#: or fpack-compressed (.fz: Legacy Survey, DES and HSC images; astropy reads the tiles).
IMAGE_RE = re.compile(r"\.(fits|fit|fts)(\.gz|\.bz2|\.fz)?$", re.IGNORECASE)


class InputError(ValueError):
    """The input cannot be used at all; the message names the file and the problem."""


def _is_table(path: Path) -> bool:
    if path.suffix.lower() in (".csv", ".ecsv"):
        return True
    if IMAGE_RE.search(path.name):
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
    try:
        import numpy as np
        if np.ma.is_masked(value):
            return True
    except TypeError:
        pass
    if isinstance(value, (str, bytes)):
        return str(value).strip() == ""
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def read_table(path, what: str = "manifest"):
    """An astropy Table from ECSV, CSV or FITS, ids kept as text.  Raises :class:`InputError`
    naming the file (and ``what`` it was meant to be) when it is missing or unreadable."""
    from astropy.table import Table
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        if path.suffix.lower() == ".csv":
            from astropy.io.ascii import convert_numpy
            # ids stay text: "007" must not become 7
            return Table.read(path, format="ascii.csv", converters={"id": [convert_numpy(str)]})
        if path.suffix.lower() == ".ecsv":
            return Table.read(path, format="ascii.ecsv")
        return Table.read(path)
    except Exception as exc:  # astropy raises many types for unreadable tables
        raise InputError(f"{path}: cannot read the {what} ({type(exc).__name__}: {exc})") from None


def read_manifest(path) -> list[dict]:
    """Records from a manifest table.  Raises :class:`InputError` naming the file when the
    table itself is unusable (unreadable, no ``id``/``image`` column, no rows, an empty id);
    a bad value in one row (a non-numeric zero-point, no image) only marks that row
    (``record["error"]``)."""
    path = Path(path)
    table = read_table(path)
    missing = [c for c in ("id", "image") if c not in table.colnames]
    if missing:
        raise InputError(f"{path}: manifest lacks required column(s) {missing}; "
                         f"it has {table.colnames}")
    if len(table) == 0:
        raise InputError(f"{path}: manifest has a header but no rows")
    base = path.resolve().parent
    records = []
    for i, row in enumerate(table):
        rec = {"id": str(row["id"]).strip(), "sources": {}}
        if _blank(row["id"]) or rec["id"] == "":
            raise InputError(f"{path}: row {i + 1} has an empty id")
        errors = []
        for key in PATH_KEYS:
            if key in table.colnames and not _blank(row[key]):
                p = Path(str(row[key]).strip())
                rec[key] = str(p if p.is_absolute() else base / p)
                rec["sources"][key] = "manifest"
        if "image" not in rec:
            errors.append(f"{path}: row {i + 1} (id {rec['id']!r}) has no image")
        for key in NUMBER_KEYS:
            if key in table.colnames and not _blank(row[key]):
                try:
                    value = float(row[key])
                except (TypeError, ValueError):
                    errors.append(f"{path}: row {i + 1} (id {rec['id']!r}): {key} = "
                                  f"{row[key]!r} is not a number")
                    continue
                if not math.isfinite(value):
                    errors.append(f"{path}: row {i + 1} (id {rec['id']!r}): {key} = {value} "
                                  "is not finite")
                    continue
                rec[key] = value
                rec["sources"][key] = "manifest"
        if errors:
            rec["error"] = "; ".join(errors)
        records.append(rec)
    return records


def _stem(path: Path) -> str:
    return IMAGE_RE.sub("", path.name)


def records_from_files(files: list[Path], where: str) -> list[dict]:
    """Records from image files, attaching companion files found beside them."""
    files = sorted({Path(f).resolve() for f in files})
    companions = set()
    records = []
    for f in files:
        stem, ext = _stem(f), f.name[len(_stem(f)):]
        rec = {"id": stem, "image": str(f), "sources": {}}
        for suffix, key in COMPANIONS.items():
            cand = f.with_name(stem + suffix + ext)
            if cand.is_file():
                rec[key] = str(cand)
                rec["sources"][key] = "file"
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


def read_inputs(source, defaults: dict | None = None, default_source: str = "option") -> list[dict]:
    """Records for ``source`` (manifest, directory or glob; see the module docstring), with
    ``defaults`` (keys ``psf``, ``zeropoint``, ``pixel_scale``, ``gain``, ``saturation``, ...)
    attached as fall-backs (see :func:`apply_defaults`).  Raises :class:`InputError`."""
    text = str(source)
    path = Path(text)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and IMAGE_RE.search(p.name)]
        records = records_from_files(files, text)
    elif path.is_file():
        records = read_manifest(path) if _is_table(path) else records_from_files([path], text)
    elif any(ch in text for ch in "*?["):
        files = [Path(p) for p in globmod.glob(text) if IMAGE_RE.search(p)]
        records = records_from_files(files, text)
    else:
        raise InputError(f"{text}: no such file, directory or glob match")
    check_unique(records, text)
    return apply_defaults(records, defaults, default_source)


def apply_defaults(records: list[dict], defaults: dict | None, source: str = "option") -> list[dict]:
    """Attach fall-back values to every record (in place; returned).

    ``defaults`` maps a key to a value, or to ``(value, source)`` where ``source`` names where
    it came from (``"option"``, ``"survey"``, ``"feedme"``); a plain value gets ``source``.
    A default never replaces what a record gives, and is used only when the image file's own
    extensions / header lack the value too.  An earlier default for a key wins over a later
    call's (call with the strongest defaults first).
    """
    for rec in records:
        slot = rec.setdefault("defaults", {})
        for key, value in (defaults or {}).items():
            value, src = value if isinstance(value, tuple) else (value, source)
            if value is not None and key not in slot:
                slot[key] = (value, src)
    return records
