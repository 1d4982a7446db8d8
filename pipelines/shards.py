"""Crash-safe results: one shard per finished chunk, resume, and the final merge.

Layout under the output directory::

    .lock                     held by the running process (``.lock-r<rank>`` per rank)
    shards/part-00000.ecsv    catalog rows of one chunk (the commit marker)
    shards/nbr-part-00000.ecsv  that chunk's fitted neighbours, when any (see neighbours.fits)
    masks/part-00000.fits     that chunk's masks: one image HDU per galaxy, EXTNAME = id

With several ranks (``run --devices``) each writes ``part-r<rank>-NNNNN`` files; the merge reads
them all.

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

__all__ = ["ShardStore", "OutputLock", "LockError", "atomic_write_table", "fill_missing"]

_PART = re.compile(r"^part-(?:(r\d+)-)?(\d{5,})\.ecsv$")


class LockError(RuntimeError):
    """Another live process holds the output directory's lock."""


class OutputLock:
    """An exclusive lock on an output directory: the file ``OUT/.lock`` (``.lock-r<rank>``
    for one rank of several), created atomically (``O_EXCL``) and holding the owner's pid,
    host and start time.  A lock left by a dead process on this host is taken over; a live
    owner (or one on another host, which cannot be checked) makes :meth:`acquire` raise
    :class:`LockError`, whose message names the lock file and its owner."""

    def __init__(self, out_dir, name: str = ".lock"):
        self.path = Path(out_dir) / name
        self.held = False

    def _owner(self) -> dict:
        import json
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "OutputLock":
        import json
        import socket
        from datetime import datetime, timezone
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                pid, host = owner.get("pid"), owner.get("host")
                if host == me["host"] and isinstance(pid, int) and not _alive(pid):
                    self.path.unlink(missing_ok=True)      # stale: its process is gone
                    continue
                raise LockError(f"{self.path}: another run (pid {pid} on {host}, started "
                                f"{owner.get('started')}) is writing into {self.path.parent}; "
                                "wait for it, or remove the lock file if that process is gone")
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(me))
            self.held = True
            return self
        raise LockError(f"{self.path}: could not take the lock")

    def release(self) -> None:
        if self.held:
            if self._owner().get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    def __init__(self, out_dir, tag: str | None = None):
        """``tag``: this writer's name part (``"r1"`` for rank 1), None for a single writer."""
        self.out = Path(out_dir)
        self.shard_dir = self.out / "shards"
        self.mask_dir = self.out / "masks"
        self.tag = tag

    def _name(self, index: int, suffix: str) -> str:
        return f"part-{self.tag}-{index:05d}{suffix}" if self.tag else f"part-{index:05d}{suffix}"

    def shard_paths(self, tag: str | bool | None = False) -> list[Path]:
        """Finished catalog shards: all of them (``tag=False``), or one writer's (``None``
        for the single writer's untagged names, ``"r1"`` for rank 1)."""
        if not self.shard_dir.is_dir():
            return []
        paths = [p for p in self.shard_dir.iterdir() if _PART.match(p.name)]
        if tag is not False:
            paths = [p for p in paths if _PART.match(p.name).group(1) == tag]
        return sorted(paths)

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
        paths = self.shard_paths(self.tag)
        return 1 + max(int(_PART.match(p.name).group(2)) for p in paths) if paths else 0

    def write(self, index: int, table: Table, masks: list[tuple[str, np.ndarray]] | None,
              neighbours: Table | None = None) -> Path:
        """Write chunk ``index``: masks and neighbours first, then the catalog shard (the
        commit marker)."""
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        if neighbours is not None and len(neighbours):
            atomic_write_table(neighbours, self.shard_dir / ("nbr-" + self._name(index, ".ecsv")),
                               "ascii.ecsv")
        if masks:
            from astropy.io import fits
            self.mask_dir.mkdir(parents=True, exist_ok=True)
            hdus = [fits.PrimaryHDU()]
            for gid, mask in masks:
                hdu = fits.ImageHDU(mask.astype(np.uint8), name=gid[:68])
                hdu.header["GALID"] = (gid[:68], "galaxy id (catalog id column)")
                hdu.header["MASKBITS"] = ("1=input mask/bad pixel, 2=automask", "nonzero = bad")
                hdus.append(hdu)
            _atomic(self.mask_dir / self._name(index, ".fits"),
                    lambda tmp: fits.HDUList(hdus).writeto(tmp, overwrite=True))
        path = self.shard_dir / self._name(index, ".ecsv")
        atomic_write_table(table, path, "ascii.ecsv")
        return path

    def merge_neighbours(self, ids: set | None = None) -> Table | None:
        """The fitted neighbours of all finished shards (None when there are none): each
        galaxy's rows from its latest shard, restricted to ``ids`` when given."""
        done = {p.name for p in self.shard_paths()}
        parts = [Table.read(p, format="ascii.ecsv") for p in sorted(self.shard_dir.glob("nbr-part-*.ecsv"))
                 if p.name[4:] in done] if self.shard_dir.is_dir() else []
        if not parts:
            return None
        table = fill_missing(vstack(parts, join_type="outer", metadata_conflicts="silent"))
        if ids is not None:
            table = table[[str(i) in ids for i in table["id"]]]
        return table

    def merge(self, order: list[str] | None = None, tag: str | bool | None = False) -> Table:
        """All shards (or one writer's, see :meth:`shard_paths`) as one table, each id once (a
        later shard wins), rows in ``order`` (the input's order) where given."""
        parts = [Table.read(p, format="ascii.ecsv") for p in self.shard_paths(tag)]
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
