"""Streaming access to many cutouts: a map-style torch Dataset over manifest rows.

Each item is read lazily with :func:`~galmoss_auto.fitting.cutout.read_cutout` (in DataLoader
worker processes when ``num_workers > 0``), so a run over 100,000 cutouts holds only the
batches in flight.  A row that cannot be read becomes a :class:`CutoutFailure` (id + message)
instead of an exception: one bad file never stops the others.  An optional ``transform`` runs
on each Cutout inside the worker too (the pipeline's sigma estimation, masking and initial
guesses are per-galaxy CPU work that belongs there).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .cutout import RECORD_KEYS, CutoutError, read_record
from .flags import Flag

__all__ = ["CutoutFailure", "CutoutDataset", "cutout_loader", "READ_KEYS"]

#: Record keys the reader uses (others, e.g. ``segmentation``, are ignored).
READ_KEYS = ("image",) + RECORD_KEYS


@dataclass
class CutoutFailure:
    """A row that could not be used: its ``id``, a message naming the file and the problem,
    the seconds spent before it failed (``timings``) and its catalog ``flags`` (BAD_INPUT,
    plus TOO_FEW_PIXELS for a cutout too small to fit)."""

    id: str
    message: str
    source: str = ""
    timings: dict = field(default_factory=dict)
    flags: int = int(Flag.BAD_INPUT)


class CutoutDataset(Dataset):
    """``dataset[i]`` reads row ``i`` (a record of :mod:`galmoss_auto.fitting.records`: ``id``,
    ``image`` and optionally ``sigma`` / ``weight`` / ``variance``, ``psf``, ``mask`` (paths or
    arrays), ``zeropoint``, ``pixel_scale``, ``gain``, ``saturation``, ``sources``,
    ``defaults``) with :func:`~galmoss_auto.fitting.cutout.read_record` and returns
    ``transform(cutout)`` (default: the Cutout), or a :class:`CutoutFailure` when reading or
    the transform raises.  The Cutout carries the read
    time in ``meta["timings"]["read"]`` (seconds)."""

    def __init__(self, records: Sequence[dict], transform: Callable | None = None):
        self.records = records
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index]
        rid = str(record.get("id", index))
        t0 = time.perf_counter()
        try:
            cutout = read_record(record)
        except Exception as exc:  # any unreadable row becomes a flagged row, never a crash
            return CutoutFailure(rid, _message(exc, record), str(record.get("image", "")),
                                 {"read": time.perf_counter() - t0},
                                 getattr(exc, "flags", int(Flag.BAD_INPUT)))
        cutout.meta["timings"] = {"read": time.perf_counter() - t0}
        if self.transform is None:
            return cutout
        try:
            return self.transform(cutout)
        except Exception as exc:  # a failing preparation costs this galaxy only
            return CutoutFailure(rid, _message(exc, record), str(record.get("image", "")),
                                 dict(cutout.meta.get("timings", {})),
                                 getattr(exc, "flags", int(Flag.BAD_INPUT)))


def _message(exc: Exception, record: dict) -> str:
    if isinstance(exc, CutoutError):
        return str(exc)
    return f"{record.get('image')}: {type(exc).__name__}: {exc}"


def _as_list(batch):
    return list(batch)


def _die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this worker when its parent dies.  Without it a worker
    of a run killed with ``kill -9`` can block forever on its full result queue, holding the
    parent's stdout/stderr open.  Elsewhere torch's own watchdog ends workers eventually."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal
    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() == 1:       # the parent died before prctl took effect
        os._exit(1)


def _worker_init(_):
    # Workers do per-galaxy CPU work; one thread each avoids oversubscribing the cores.
    torch.set_num_threads(1)
    _die_with_parent()


def cutout_loader(records: Sequence[dict], batch_size: int = 64, num_workers: int = 0,
                  transform: Callable | None = None, prefetch_factor: int = 2) -> Iterator[list]:
    """Yield lists of up to ``batch_size`` items (Cutouts, transformed items or
    :class:`CutoutFailure`), in record order.  ``num_workers`` (>= 0) processes read in
    parallel; at most ``num_workers * prefetch_factor`` batches are in memory ahead."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    dataset = CutoutDataset(records, transform)
    extra = {"prefetch_factor": prefetch_factor, "worker_init_fn": _worker_init,
             "persistent_workers": False} if num_workers > 0 else {}
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_as_list, **extra)
    yield from loader
