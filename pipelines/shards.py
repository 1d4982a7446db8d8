"""Crash-safe results: one shard per finished chunk, resume, and the final merge.

Layout under the output directory::

    shards/part-00000.ecsv    catalog rows of one chunk (the commit marker)
    masks/part-00000.fits     that chunk's masks: one image HDU per galaxy, EXTNAME = id

Every file is written to a temporary name in the same folder, fsync'ed, then renamed with
``os.replace`` (atomic on POSIX), and the folder is fsync'ed; so after Ctrl-C, ``kill -9`` or a
power loss a shard either exists whole or not at all.  The mask file is written before the
catalog shard, so a galaxy counts as done only when both are on disk.  Leftover temporary
files are removed on resume.  The set of done ids is the union of the shards' ``id`` columns.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
from astropy.table import Table, vstack

__all__ = ["ShardStore", "atomic_write_table", "fill_missing"]

_PART = re.compile(r"^part-(\d{5,})\.ecsv$")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_table(table: Table, path: Path, fmt: str) -> None:
    """Write ``table`` to ``path`` (astropy format ``fmt``) atomically."""
    import warnings

    from astropy.io.fits.verify import VerifyWarning

    def write(tmp):
        with warnings.catch_warnings():
            # Long metadata keys become HIERARCH cards in FITS: expected, not worth a warning.
            warnings.simplefilter("ignore", VerifyWarning)
            table.write(tmp, format=fmt, overwrite=True)
    _atomic(Path(path), write)


def fill_missing(table: Table) -> Table:
    """Replace masked cells (from joining shards with different columns): floats -> NaN,
    integers -> 0 (or -1 for ``mask_n_objects``), booleans -> False, strings -> ''."""
    from astropy.table import Column, MaskedColumn
    cols = []
    for name in table.colnames:
        col = table[name]
        if isinstance(col, MaskedColumn):
            fill = {"f": np.nan, "i": -1 if name == "mask_n_objects" else 0, "u": 0,
                    "b": False}.get(col.dtype.kind, "")
            col = Column(col.filled(fill), name=name, unit=col.unit, description=col.description)
        cols.append(col)
    out = Table(cols, meta=table.meta)
    return out


class ShardStore:
    """The shards of one output directory."""

    def __init__(self, out_dir):
        self.out = Path(out_dir)
        self.shard_dir = self.out / "shards"
        self.mask_dir = self.out / "masks"

    def shard_paths(self) -> list[Path]:
        if not self.shard_dir.is_dir():
            return []
        return sorted(p for p in self.shard_dir.iterdir() if _PART.match(p.name))

    def exists(self) -> bool:
        return bool(self.shard_paths())

    def clean_temporaries(self) -> int:
        """Remove half-written files left by an interrupted run; returns how many."""
        n = 0
        for folder in (self.shard_dir, self.mask_dir):
            if folder.is_dir():
                for p in folder.iterdir():
                    if p.name.startswith(".") and ".tmp" in p.name:
                        p.unlink()
                        n += 1
        return n

    def done_ids(self) -> set[str]:
        """Ids in finished shards."""
        done = set()
        for p in self.shard_paths():
            done.update(str(i) for i in Table.read(p, format="ascii.ecsv")["id"])
        return done

    def next_index(self) -> int:
        paths = self.shard_paths()
        return 1 + max(int(_PART.match(p.name).group(1)) for p in paths) if paths else 0

    def write(self, index: int, table: Table, masks: list[tuple[str, np.ndarray]] | None) -> Path:
        """Write chunk ``index``: masks first, then the catalog shard (the commit marker)."""
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        if masks:
            from astropy.io import fits
            self.mask_dir.mkdir(parents=True, exist_ok=True)
            hdus = [fits.PrimaryHDU()]
            for gid, mask in masks:
                hdu = fits.ImageHDU(mask.astype(np.uint8), name=gid[:68])
                hdu.header["GALID"] = (gid[:68], "galaxy id (catalog id column)")
                hdu.header["MASKBITS"] = ("1=input mask/bad pixel, 2=automask", "nonzero = bad")
                hdus.append(hdu)
            _atomic(self.mask_dir / f"part-{index:05d}.fits",
                    lambda tmp: fits.HDUList(hdus).writeto(tmp, overwrite=True))
        path = self.shard_dir / f"part-{index:05d}.ecsv"
        atomic_write_table(table, path, "ascii.ecsv")
        return path

    def merge(self, order: list[str] | None = None) -> Table:
        """All shards as one table, each id once (a later shard wins), rows in ``order``
        (the input's order) where given."""
        parts = [Table.read(p, format="ascii.ecsv") for p in self.shard_paths()]
        if not parts:
            raise FileNotFoundError(f"{self.shard_dir}: no shards to merge")
        table = fill_missing(vstack(parts, join_type="outer", metadata_conflicts="silent"))
        ids = [str(i) for i in table["id"]]
        last = {gid: k for k, gid in enumerate(ids)}
        if order is not None:
            rows = [last[g] for g in order if g in last]
        else:
            rows = sorted(last.values())
        return table[rows]

    def read_mask(self, gid: str) -> np.ndarray:
        """The saved mask of galaxy ``gid`` (uint8; 1 = input mask/bad pixel, 2 = automask)."""
        from astropy.io import fits
        for p in sorted(self.mask_dir.glob("part-*.fits"), reverse=True):
            with fits.open(p) as hdul:
                for hdu in hdul[1:]:
                    if hdu.header.get("GALID") == gid:
                        return np.asarray(hdu.data)
        raise KeyError(f"{self.mask_dir}: no mask for id {gid!r}")
