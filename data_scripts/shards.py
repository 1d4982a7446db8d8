"""Sharded arrays for training at scale, and a PyTorch dataset that streams them.

A shard ``shards/shard-NNNNN.npz`` (uncompressed; written by
:func:`galmoss_auto.data_scripts.outputs.write_shard`) holds K consecutive cutouts stacked along
the first axis: ``image``, ``sigma``, ``noiseless`` (float32, K x H x W), ``segmentation``
(int16, K x H x W), ``psf`` (float32, K x h x w), ``id`` (str), ``index`` (int64) and one
``truth_<column>`` array per truth-table column (float64, or str for text columns).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .outputs import ARRAYS, read_shard

__all__ = ["ARRAYS", "read_shard", "shard_files", "ShardDataset"]


def shard_files(folder) -> list[Path]:
    """Shard files of a simulation output folder (or its ``shards/`` subfolder), sorted."""
    folder = Path(folder)
    if (folder / "shards").is_dir():
        folder = folder / "shards"
    files = sorted(folder.glob("shard-*.npz"))
    if not files:
        raise FileNotFoundError(f"{folder}: no shard-*.npz files")
    return files


class ShardDataset(torch.utils.data.IterableDataset):
    """Streams cutouts from shards, one shard in memory per data-loader worker.

    Each data-loader worker (and each distributed rank, via ``rank`` / ``world_size``) reads a
    disjoint subset of the shards.  With ``shuffle`` the shard order and the order inside each
    shard are permuted anew each epoch from ``seed + epoch`` (call :meth:`set_epoch`).

    Each item is a dict of tensors: image, sigma, psf, noiseless (float32), segmentation (int64),
    and ``truth`` (dict of float64 scalars for the numeric truth columns), plus ``id`` (str).
    """

    def __init__(self, folder, keys=ARRAYS, shuffle=False, seed=0, rank=0, world_size=1):
        super().__init__()
        self.files = shard_files(folder)
        self.keys = tuple(keys)
        unknown = set(self.keys) - set(ARRAYS)
        if unknown:
            raise ValueError(f"unknown shard arrays {sorted(unknown)}; choose from {ARRAYS}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.rank, self.world_size = rank, world_size
        self._lengths = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self):
        if self._lengths is None:
            self._lengths = []
            for f in self.files:
                with np.load(f) as data:
                    self._lengths.append(len(data["index"]))
        return sum(self._lengths[self.rank::self.world_size])

    def _my_files(self):
        order = np.arange(len(self.files))
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            rng.shuffle(order)
        order = order[self.rank::self.world_size]
        info = torch.utils.data.get_worker_info()
        if info is not None:
            order = order[info.id::info.num_workers]
        return [(self.files[i], rng) for i in order]

    def __iter__(self):
        for path, rng in self._my_files():
            shard = read_shard(path)
            n = len(shard["index"])
            idx = rng.permutation(n) if self.shuffle else np.arange(n)
            truth_keys = [k for k in shard if k.startswith("truth_") and shard[k].dtype.kind == "f"]
            for i in idx:
                item = {k: torch.from_numpy(np.asarray(shard[k][i], np.int64 if k == "segmentation"
                                                      else np.float32)) for k in self.keys}
                item["truth"] = {k[6:]: float(shard[k][i]) for k in truth_keys}
                item["id"] = str(shard["id"][i])
                yield item
