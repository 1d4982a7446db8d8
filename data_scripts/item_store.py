"""Prepared training items on disk, streamed back one file at a time; streams interleaved.

Training on real cutouts prepares each cutout once (read, sky measured, masked, as ``run`` does)
into an *item*, the stage's training example.  Holding every item in memory does not scale
(10^5 cutouts of 128² are ~15 GB), so the items are written here, in files of ``per_file``
items, and read back lazily: a reader holds at most one item at a time and each distributed
rank and data-loader worker reads its own items.

An item is a dict whose values are arrays (numpy or torch; any shape, any dtype safetensors
stores), JSON values (numbers, strings, booleans, None) or dicts of these (nested to any
depth).  Arrays come back as torch tensors with their dtype and shape, the rest as written.

Folder layout::

    items-00000.safetensors   tensors "<k>/<field>[/<sub>...]" of the file's k-th item;
                              metadata "values": a JSON list of each item's other fields
    ...
    index.json                {"format", "key", "files": [[name, n], ...], "n"}

``index.json`` is written last: a folder without it (an interrupted preparation) is not used.
``key`` says what the items were prepared from; :func:`read_index` returns None when it
differs, so that changed inputs are prepared again.  No pickle anywhere.

:class:`Mixed` interleaves item streams (simulated shards, stored real items) for training.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

__all__ = ["FORMAT", "ItemWriter", "write_items", "read_index", "cache_folder", "StoredItems", "Mixed"]

FORMAT = "galmoss-auto-items-1"


def _flatten(item: dict, prefix: str, tensors: dict, values: dict) -> None:
    for name, value in item.items():
        if "/" in str(name):
            raise ValueError(f"item field {name!r}: names may not contain '/'")
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            _flatten(value, path + "/", tensors, values)
        elif isinstance(value, torch.Tensor):
            tensors[path] = value.detach().cpu().contiguous()
        elif isinstance(value, np.ndarray):
            tensors[path] = torch.from_numpy(np.ascontiguousarray(value))
        elif isinstance(value, np.generic):
            values[path] = value.item()
        else:
            values[path] = value


def _nest(flat: dict) -> dict:
    out: dict = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


class ItemWriter:
    """Writes items into ``folder`` (cleared first), ``per_file`` to a file; :meth:`close`
    writes ``index.json`` with ``key``.  Only ``per_file`` items are held in memory, so any
    number of cutouts can be written.  A context manager: leaving the ``with`` block normally
    closes the store; leaving it by an exception leaves no index (the store is not used)."""

    def __init__(self, folder, key: str, per_file: int = 256):
        if per_file < 1:
            raise ValueError(f"per_file must be >= 1, got {per_file}")
        self.folder, self.key, self.per_file = Path(folder), str(key), int(per_file)
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        self.files, self.block = [], []

    def add(self, item: dict) -> None:
        self.block.append(item)
        if len(self.block) == self.per_file:
            self._flush()

    def _flush(self) -> None:
        from safetensors.torch import save_file

        tensors, values = {}, []
        for k, item in enumerate(self.block):
            flat = {}
            _flatten(item, f"{k}/", tensors, flat)
            values.append({p.split("/", 1)[1]: v for p, v in flat.items()})
        try:
            text = json.dumps(values, allow_nan=True)
        except TypeError as exc:
            raise ValueError(f"{self.folder}: an item field is neither an array nor a JSON value ({exc})") from None
        name = f"items-{len(self.files):05d}.safetensors"
        save_file(tensors, str(self.folder / name), metadata={"format": FORMAT, "values": text})
        self.files.append([name, len(self.block)])
        self.block = []

    @property
    def n(self) -> int:
        """Items added so far."""
        return sum(c for _, c in self.files) + len(self.block)

    def close(self) -> int:
        """Write the last file and the index; returns the number of items."""
        if self.block:
            self._flush()
        tmp = self.folder / "index.json.tmp"
        tmp.write_text(json.dumps({"format": FORMAT, "key": self.key, "files": self.files, "n": self.n},
                                  indent=1))
        os.replace(tmp, self.folder / "index.json")
        return self.n

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.close()


def write_items(folder, items: Iterable[dict], key: str, per_file: int = 256) -> int:
    """Write ``items`` (any iterable, a generator over any number of cutouts included) with an
    :class:`ItemWriter`; returns the number of items."""
    with ItemWriter(folder, key, per_file) as writer:
        for item in items:
            writer.add(item)
    return writer.n


def cache_folder(name: str, key: str) -> Path:
    """The default folder of an item store: ``<temp>/galmoss-auto-items/<name>-<key[:20]>``,
    the same for every process of a machine that prepares the same inputs."""
    return Path(tempfile.gettempdir()) / "galmoss-auto-items" / f"{name}-{key[:20]}"


def read_index(folder, key: str | None = None) -> dict | None:
    """The folder's index when its items are complete (and were prepared from ``key``, when
    given); None otherwise."""
    path = Path(folder) / "index.json"
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if index.get("format") != FORMAT or (key is not None and index.get("key") != key):
        return None
    if not all((Path(folder) / name).is_file() for name, _ in index["files"]):
        return None
    return index


class StoredItems(torch.utils.data.IterableDataset):
    """The items of a folder written by :func:`write_items`, streamed.

    With ``shuffle`` the file order and the order inside each file are drawn anew each epoch
    from ``(seed, epoch)`` (call :meth:`set_epoch`).  Under DDP each of ``world_size`` ranks
    takes every ``world_size``-th item of that order, and the same number of items (the
    remainder, at most ``world_size - 1`` items, changes with the epoch and is left out), so
    that the ranks step together; each data-loader worker of a rank takes every
    ``num_workers``-th of the rank's items.  Every item is thus read once per epoch in all.
    Items are read lazily (one tensor at a time from the memory-mapped file); ``transform``,
    when given, is applied to each.
    """

    def __init__(self, folder, shuffle: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1,
                 transform=None):
        super().__init__()
        self.transform = transform
        self.folder = Path(folder)
        index = read_index(self.folder)
        if index is None:
            raise FileNotFoundError(f"{self.folder}: no complete item store (index.json missing or "
                                    f"not of format {FORMAT})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.files = [(self.folder / name, int(n)) for name, n in index["files"]]
        self.n = int(index["n"])
        self.shuffle, self.seed, self.epoch = bool(shuffle), int(seed), 0
        self.rank, self.world_size = int(rank), int(world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self):
        return self.n // self.world_size

    def _order(self) -> list[tuple[int, int]]:
        """(file, item) pairs of this rank and worker, in reading order."""
        rng = np.random.default_rng([self.seed, self.epoch, 5])
        files = rng.permutation(len(self.files)) if self.shuffle else np.arange(len(self.files))
        order = [(int(f), int(i)) for f in files
                 for i in (rng.permutation(self.files[f][1]) if self.shuffle else range(self.files[f][1]))]
        order = order[:len(self) * self.world_size][self.rank::self.world_size]
        info = torch.utils.data.get_worker_info()
        if info is not None:
            order = order[info.id::info.num_workers]
        return order

    def __iter__(self):
        from safetensors import safe_open

        current, handle, values, names = None, None, None, None
        for f, i in self._order():
            if f != current:
                handle = safe_open(str(self.files[f][0]), framework="pt")
                values = json.loads(handle.metadata()["values"])
                names = {}
                for name in handle.keys():
                    k, path = name.split("/", 1)
                    names.setdefault(int(k), []).append(path)
                current = f
            flat = dict(values[i])
            for path in names.get(i, []):
                flat[path] = handle.get_tensor(f"{i}/{path}")
            item = _nest(flat)
            yield self.transform(item) if self.transform is not None else item


class Mixed(torch.utils.data.IterableDataset):
    """Several item streams interleaved in proportion to their lengths (drawn anew each epoch
    from ``(seed, epoch)``), each item of each stream once per epoch.  Every source needs
    ``__len__`` and ``set_epoch``; a data-loader worker interleaves its own share of each."""

    def __init__(self, sources, seed: int = 0):
        super().__init__()
        self.sources = list(sources)
        if not self.sources:
            raise ValueError("Mixed needs at least one source")
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for s in self.sources:
            s.set_epoch(epoch)

    def __len__(self):
        return sum(len(s) for s in self.sources)

    def __iter__(self):
        its = [iter(s) for s in self.sources]
        left = np.array([len(s) for s in self.sources], float)
        rng = np.random.default_rng([self.seed, self.epoch, 11])
        while its:
            k = rng.choice(len(its), p=left / left.sum()) if len(its) > 1 else 0
            try:
                yield next(its[k])
                left[k] = max(left[k] - 1, 1e-9)
            except StopIteration:
                del its[k]
                left = np.delete(left, k)
