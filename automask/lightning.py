"""Training the Mask R-CNN masker with Lightning, and the stage API ``galmoss-auto train`` calls.

* :class:`AutomaskData` (LightningDataModule): instance targets from the simulator's exact
  segmentation map and object table (``objects.ecsv``), streamed shard by shard
  (:class:`ShardInstances`); augmentation: 90-degree rotations, flips, a higher noise level
  (extra Gaussian noise, sigma map scaled to match), a residual sky pedestal, and central crops
  of 64-128 px from 128-px simulations, one side per batch (``crop``), so that one network
  serves every cutout size with the target at the centre; PSF width, depth and crowding vary
  through the simulations themselves (mix presets / bands).  Optional real
  cutouts with labels from a previous run (:func:`iter_real_instances`: pseudo-targets, see there),
  prepared once into an item store on disk and streamed with the simulated ones.
* :class:`AutomaskModule` (LightningModule): the network (:func:`~.maskrcnn.maskrcnn`), AdamW with
  a linear warm-up and a cosine decay; training losses and validation metrics (central-galaxy
  IoU, contaminant recall, mask AP50) are logged.  Seeded (``lightning.seed_everything`` plus
  per-item augmentation generators from ``(seed, epoch, shard, index)``); resumable from a
  Lightning checkpoint (``Trainer.fit(..., ckpt_path="last")``).
* Stage API: :data:`DEFAULTS`, :func:`build_module`, :func:`build_datamodule`, :func:`evaluate`,
  :func:`export`, :func:`report_figures`.

Cost (measured on the shared 2-core VM, one torch thread): the defaults (6,000 simulated
128-px cutouts, 60 % with a close blend, crops of 64-128 px, x 2 epochs) trained at 14.4
samples/s alone (898 s) and at 5-11 samples/s with other trainings sharing the cores, plus
~5 min of simulation and ~3 min of evaluation; ``n_train=600, epochs=1`` is a few-minute smoke
run.  Resuming restores the weights, optimiser, schedule and epoch; an epoch cut short restarts
from its first shard (the streamed dataset does not save its position).
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
from astropy.table import Table

from galmoss_auto.data_scripts.item_store import Mixed, StoredItems, cache_folder, read_index, write_items
from galmoss_auto.data_scripts.outputs import read_shard
from galmoss_auto.data_scripts.shards import shard_files

from .instances import KIND_TO_CLASS, average_precision, decode, mask_iou, pick_central, targets_from_segmentation
from .maskrcnn import ANCHOR_SIZES_128, CENTRAL, CLASSES, maskrcnn
from .normalise import normalise_batch

__all__ = ["DEFAULTS", "CROP_STEP", "AutomaskModule", "AutomaskData", "ShardInstances", "build_module",
           "inference_network", "build_datamodule", "evaluate", "export", "report_figures", "augment",
           "centre_crop", "crop_sides", "collate"]

#: Defaults of ``galmoss-auto train --stage automask`` (cost: see the module docstring).
DEFAULTS = {
    "n_train": 6000,        # simulated training cutouts (128 px, trained as central crops)
    "epochs": 2,
    "batch_size": 8,
    "lr": 2e-3,             # AdamW peak learning rate
    "arch": "slim",         # "slim" | "resnet18" | "resnet50"
    "size": 128,            # simulated cutout side, px (the network runs at any size 64-256)
    # the fraction of simulated cutouts with a close blend (the simulator's default is 0.3):
    # trained with 0.6, the held-out fits of legacy and hsc improved (catastrophic 8.0 -> 7.3 %
    # and 9.7 -> 7.3 %, blends' Δmag scatter 0.131 -> 0.111 and 0.155 -> 0.133) and sdss's
    # stayed equal (benchmarks/results/2026-12-05-vm-cpu-automask-v3.md)
    "blend_prob": 0.6,
    "crop": (64, 128),      # training crops: centred, side drawn from 64, 80, ..., 128 px per batch
    # where the centre is (centre-offset channels) and anchors up to 112 px: see maskrcnn.py
    "builder": {"coordinates": 64.0, "anchor_sizes": ANCHOR_SIZES_128},
    "cost": "15-28 min of training on one CPU core (8-14 samples/s measured); minutes on a GPU",
}
#: Crop sides are multiples of this (px), so that a batch pads to the same 32-px multiple.
CROP_STEP = 16


# ---------------------------------------------------------------------------------------------
# data

def augment(image: np.ndarray, sigma: np.ndarray, seg: np.ndarray, rng: np.random.Generator,
            noise_prob: float = 0.5, max_noise: float = 2.0, pedestal: float = 0.5):
    """Random rot90 / flip of all three maps; with probability ``noise_prob`` the noise level
    raised by a factor in [1, ``max_noise``] (extra Gaussian noise; sigma scaled to match);
    a constant sky pedestal of N(0, ``pedestal``) x the median sigma.  Returns new arrays."""
    k = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = []
    for a in (image, sigma, seg):
        a = np.rot90(a, k)
        out.append(np.ascontiguousarray(a[:, ::-1] if flip else a))
    image, sigma, seg = out
    image = image.astype(np.float32, copy=True)
    sigma = sigma.astype(np.float32, copy=True)
    if rng.random() < noise_prob:
        f = float(rng.uniform(1.0, max_noise))
        image += (rng.standard_normal(image.shape) * sigma * math.sqrt(f * f - 1.0)).astype(np.float32)
        sigma *= f
    image += float(rng.normal(0.0, pedestal)) * float(np.median(sigma))
    return image, sigma, seg


def crop_sides(crop) -> tuple[int, ...]:
    """The crop sides (px) of a ``(low, high)`` range: multiples of :data:`CROP_STEP` in it
    (``high`` included).  None -> () (no cropping)."""
    if crop is None:
        return ()
    lo, hi = (int(v) for v in crop)
    if not 32 <= lo <= hi:
        raise ValueError(f"crop must be (low, high) px with 32 <= low <= high, got {crop}")
    sides = tuple(range(-(-lo // CROP_STEP) * CROP_STEP, hi + 1, CROP_STEP))
    if not sides:
        raise ValueError(f"crop {crop} holds no multiple of {CROP_STEP} px")
    return sides


def centre_crop(side: int, *maps):
    """The central ``side`` x ``side`` part of each (H, W) map (all of it where smaller).  The
    cutout centre stays the crop's centre ((H - 1) / 2 -> (side - 1) / 2 when H - side is even,
    as for all multiples of 16 of a 128-px cutout), so "central" keeps its meaning."""
    out = []
    for a in maps:
        h, w = a.shape[-2:]
        r0, c0 = max((h - side) // 2, 0), max((w - side) // 2, 0)
        out.append(np.ascontiguousarray(a[..., r0:r0 + min(side, h), c0:c0 + min(side, w)]))
    return out


def _classes_by_id(objects: Table) -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    for gid, label, kind in zip(objects["id"], objects["label"], objects["kind"]):
        c = KIND_TO_CLASS.get(str(kind))
        if c is not None:
            out.setdefault(str(gid), {})[int(label)] = c
    return out


def _sim_folders(paths) -> list[Path]:
    """Simulation folders (with shards/ and objects.ecsv) under ``paths`` (a folder, a folder of
    folders, or a list of either)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out = []
    for p in paths:
        p = Path(p)
        if (p / "objects.ecsv").is_file():
            out.append(p)
        else:
            subs = sorted(q for q in p.iterdir() if (q / "objects.ecsv").is_file()) if p.is_dir() else []
            if not subs:
                raise FileNotFoundError(f"{p}: no simulation here (objects.ecsv and shards/ expected, "
                                        "as written by galmoss-auto simulate)")
            out.extend(subs)
    return out


class ShardInstances(torch.utils.data.IterableDataset):
    """(normalised image (1, H, W), target dict) pairs streamed from simulation shards.

    folders : simulation output folder(s) (see :func:`_sim_folders`).
    train : augment (and shuffle shards and items, anew each epoch from ``seed + epoch``).
    limit : use at most this many cutouts (the first shards, in sorted order).
    crop : (low, high) px, training only: each cutout is cut to its central square of a side
        drawn from :func:`crop_sides`, the same for ``group`` consecutive items (one batch: a
        batch is padded to its largest cutout, so mixing sides within one would waste compute).
        One network thus learns cutouts of every size, with the target at the centre.
    Each data-loader worker and each distributed rank (``rank``/``world_size``) reads its own shards.
    """

    def __init__(self, folders, train: bool = True, seed: int = 0, limit: int | None = None,
                 rank: int = 0, world_size: int = 1, crop=None, group: int = 1):
        super().__init__()
        self.folders = _sim_folders(folders)
        self.classes = {}
        self.files = []
        for f in self.folders:
            self.classes.update(_classes_by_id(Table.read(f / "objects.ecsv", format="ascii.ecsv")))
            self.files.extend(shard_files(f))
        self.lengths = [len(np.load(f, mmap_mode="r")["index"]) for f in self.files]
        if limit is not None:
            keep, total = [], 0
            order = np.random.default_rng(seed).permutation(len(self.files)) if train else range(len(self.files))
            for i in order:
                if total >= limit:
                    break
                keep.append(int(i))
                total += self.lengths[i]
            keep.sort()
            self.files = [self.files[i] for i in keep]
            self.lengths = [self.lengths[i] for i in keep]
        self.train, self.seed, self.epoch = train, int(seed), 0
        self.rank, self.world_size = rank, world_size
        self.sides = crop_sides(crop) if train else ()
        if int(group) < 1:
            raise ValueError(f"group must be >= 1, got {group}")
        self.group = int(group)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self):
        return sum(self.lengths[self.rank::self.world_size])

    def __iter__(self):
        order = np.arange(len(self.files))
        if self.train:
            np.random.default_rng([self.seed, self.epoch]).shuffle(order)
        order = order[self.rank::self.world_size]
        info = torch.utils.data.get_worker_info()
        worker = 0
        if info is not None:
            order = order[info.id::info.num_workers]
            worker = info.id
        k = 0
        for fi in order:
            shard = read_shard(self.files[fi])
            n = len(shard["index"])
            idx = (np.random.default_rng([self.seed, self.epoch, int(fi)]).permutation(n)
                   if self.train else np.arange(n))
            for i in idx:
                side = None
                if self.sides:
                    draw = np.random.default_rng([self.seed, self.epoch, self.rank, worker, k // self.group])
                    side = int(self.sides[int(draw.integers(len(self.sides)))])
                k += 1
                yield self.item(shard, int(i), int(fi), side)

    def item(self, shard: dict, i: int, fi: int = 0, side: int | None = None):
        """One (normalised image, target) pair; ``side``: its central crop (px), None = whole."""
        gid = str(shard["id"][i])
        image, sigma, seg = shard["image"][i], shard["sigma"][i], shard["segmentation"][i]
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, fi, int(shard["index"][i])])
            image, sigma, seg = augment(image, sigma, seg, rng)
        if side is not None:
            # cropped before the normalisation, which estimates the background from the crop
            # itself as the masker does for a cutout of that size
            image, sigma, seg = centre_crop(side, image, sigma, seg)
        z = normalise_batch(torch.from_numpy(np.asarray(image, np.float32))[None],
                            torch.from_numpy(np.asarray(sigma, np.float32))[None])
        target = targets_from_segmentation(seg, self.classes.get(gid, {}))
        target["id"] = gid
        return z, target


def collate(batch):
    """List of (image, target) -> (list of images, list of targets) (torchvision's input)."""
    return [b[0] for b in batch], [b[1] for b in batch]


class AutomaskData(L.LightningDataModule):
    """Training and validation cutouts for the masker (see the module docstring).

    train_dir, val_dir : simulation folders (``galmoss-auto simulate`` outputs; several allowed).
    batch_size : cutouts per step; seed : shuffling and augmentation; num_workers : data-loader
    processes (0 = main process; the network never runs in them); n_train : use at most this
    many training cutouts; crop : (low, high) px of the training crops, one side per batch
    (see :class:`ShardInstances`; None = whole cutouts).  Validation uses whole cutouts.
    real, labels : extra real training cutouts (anything ``run`` reads) and the catalog that
    labels them (both or neither; see :func:`iter_real_instances`), prepared with the run
    settings ``real_options``; real_cache : folder of their prepared items (default: a folder of
    the system's temporary directory named by what they are prepared from).  They are prepared
    once, in :meth:`prepare_data` (one process per machine, a chunk in memory at a time), and
    each rank and data-loader worker streams its own share of them, interleaved with the
    simulated cutouts (each real item once per epoch).
    """

    def __init__(self, train_dir, val_dir=None, batch_size: int = 8, seed: int = 0, num_workers: int = 0,
                 n_train: int | None = None, real=None, crop=None, labels=None,
                 real_options: dict | None = None, real_cache=None):
        super().__init__()
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if (real is None) != (labels is None):
            raise ValueError("real cutouts and their labels go together: give both real and labels, or neither")
        self.train_dir, self.val_dir = train_dir, val_dir
        self.batch_size, self.seed, self.num_workers = int(batch_size), int(seed), int(num_workers)
        self.n_train, self.real, self.labels = n_train, real, labels
        self.real_options = dict(real_options or {})
        self.real_key = None if real is None else _real_key(real, labels, self.real_options)
        self.real_cache = None if real is None else Path(
            real_cache if real_cache is not None else cache_folder("automask", self.real_key))
        self.crop = None if crop is None else tuple(int(v) for v in crop)
        crop_sides(self.crop)  # validates
        self.train_set = self.val_set = None

    def prepare_data(self):
        """Prepare the real cutouts' pseudo-labelled items into the item store ``real_cache``
        (skipped when it is there and was prepared from the same inputs)."""
        if self.real is None or read_index(self.real_cache, self.real_key):
            return
        items = iter_real_instances(self.real, self.labels, options=self.real_options)
        write_items(self.real_cache, ({"image": z, "target": t} for z, t in items), self.real_key)

    def setup(self, stage=None):
        if self.train_set is None:
            rank = getattr(self.trainer, "global_rank", 0) if self.trainer else 0
            world = getattr(self.trainer, "world_size", 1) if self.trainer else 1
            self.train_set = ShardInstances(self.train_dir, True, self.seed, self.n_train, rank, world,
                                            crop=self.crop, group=self.batch_size)
            if self.real is not None:
                if self.trainer is None:        # used without a Trainer: nobody called prepare_data
                    self.prepare_data()
                if read_index(self.real_cache)["n"] == 0:
                    raise _no_real_items(self.real, self.labels)
                real = StoredItems(self.real_cache, shuffle=True, seed=self.seed, rank=rank, world_size=world,
                                   transform=_as_pair)
                self.train_set = Mixed([self.train_set, real], seed=self.seed)
            if self.val_dir is not None:
                self.val_set = ShardInstances(self.val_dir, False, self.seed, None, rank, world)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.train_set, batch_size=self.batch_size, collate_fn=collate,
                                           num_workers=self.num_workers)

    def val_dataloader(self):
        if self.val_set is None:
            return []
        return torch.utils.data.DataLoader(self.val_set, batch_size=self.batch_size, collate_fn=collate,
                                           num_workers=self.num_workers)


def _as_pair(item: dict) -> tuple:
    """A stored real item as the (image, target) pair the simulated items are."""
    return item["image"], item["target"]


def _real_key(real, labels, options: dict) -> str:
    """What the prepared real items depend on: the cutouts, the labels file, the settings."""
    import hashlib
    from galmoss_auto.pipelines.run import training_cutouts_key
    path = Path(str(labels))
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else str(labels)
    return training_cutouts_key(real, options, stage="automask", labels=digest, format=1)


def real_instances(real, labels, max_central_distance: float = 0.25, options: dict | None = None) -> list:
    """:func:`iter_real_instances` as a list; raises ValueError when it is empty."""
    items = list(iter_real_instances(real, labels, max_central_distance, options))
    if not items:
        raise _no_real_items(real, labels)
    return items


def _no_real_items(real, labels) -> ValueError:
    return ValueError(f"{real}: no cutout with a label free of quality flags in {labels} and a detected central")


def iter_real_instances(real, labels, max_central_distance: float = 0.25, options: dict | None = None):
    """Pseudo-labelled training items ``(image, target)`` from real cutouts and a label
    catalog, one at a time (a chunk of cutouts in memory).

    real : real cutouts as ``galmoss-auto run`` reads them (a manifest, a folder, a glob, one
        FITS file), read and given their noise step by the run's own code
        (:func:`galmoss_auto.pipelines.run.prepare_training_cutouts`, no masker), with ``options`` the
        run's settings (survey, band, psf, zeropoint, ...; see
        :class:`~galmoss_auto.pipelines.config.RunConfig`).  Cutouts that cannot be read are
        left out with a warning.
    labels : a catalog with ``id`` and the target's ``<comp>_x``, ``<comp>_y`` (1-based; e.g. a
        previous run's converged fits); rows whose ``flags`` hold a quality bit are skipped
        (:func:`~galmoss_auto.fitting.flags.is_clean_fit`).
    The targets are sep's deblended segments (the pipeline's detection settings): the segment
    under the labelled position is the central galaxy; other segments are stars when their
    second moments are within 20% of the PSF's (or, without a PSF, when sep's ``a`` is below 1.5
    px), galaxies otherwise.  The network thus learns the survey's real noise, sky and PSF from
    labels no better than sep's; use it to adapt a simulated model, not as a replacement.
    """
    from galmoss_auto.automask.detect import DetectConfig, detect
    from galmoss_auto.fitting.flags import is_clean_fit
    from galmoss_auto.pipelines.run import prepare_training_cutouts
    from .maskrcnn import GALAXY, STAR

    lab = Table.read(labels)
    if "id" not in lab.colnames:
        raise ValueError(f"{labels}: a label catalog needs an 'id' column")
    xcol = next((c for c in lab.colnames if c.endswith("_x") and not c.endswith("_err")), None)
    ycol = xcol[:-2] + "_y" if xcol else None
    if xcol is None or ycol not in lab.colnames:
        raise ValueError(f"{labels}: no <component>_x / <component>_y columns for the target position")
    ok = np.ones(len(lab), bool) if "flags" not in lab.colnames else np.atleast_1d(is_clean_fit(lab["flags"]))
    pos = {str(i): (float(x), float(y)) for i, x, y, g in zip(lab["id"], lab[xcol], lab[ycol], ok) if g}
    for g in prepare_training_cutouts(real, {**(options or {}), "mask": "none"}, ids=pos):
        c = g.cutout
        sigma = c.sigma
        det = detect(c.image, sigma, c.mask, DetectConfig(max_central_distance=max_central_distance))
        x, y = pos[c.id]
        r, col = int(round(y - 1)), int(round(x - 1))
        h, w = c.shape
        if not (0 <= r < h and 0 <= col < w) or det.segmap[r, col] == 0:
            continue
        central = int(det.segmap[r, col])
        psf_size = None
        if c.psf is not None:
            yy, xx = np.indices(c.psf.shape)
            p = c.psf / c.psf.sum()
            my, mx = (p * yy).sum(), (p * xx).sum()
            # in image pixels, as sep's sizes are
            psf_size = math.sqrt(max((p * ((yy - my) ** 2 + (xx - mx) ** 2)).sum() / 2, 1e-6)) / c.psf_oversampling
        classes = {}
        for k, obj in enumerate(det.objects):
            if k + 1 == central:
                classes[k + 1] = CENTRAL
                continue
            size = math.sqrt(max(obj["a"] * obj["b"], 1e-6))
            point = size < 1.2 * psf_size if psf_size else obj["a"] < 1.5
            classes[k + 1] = STAR if point else GALAXY
        s = sigma if sigma is not None else np.full(c.shape, det.sky.rms)
        z = normalise_batch(torch.from_numpy((c.image - det.sky.level).astype(np.float32))[None],
                            torch.from_numpy(s.astype(np.float32))[None],
                            torch.from_numpy(c.mask)[None])
        target = targets_from_segmentation(det.segmap, classes)
        target["id"] = c.id
        yield z, target


# ---------------------------------------------------------------------------------------------
# module

class AutomaskModule(L.LightningModule):
    """The Mask R-CNN masker as a LightningModule.

    arch : backbone ("slim", "resnet18", "resnet50"); size : nominal cutout side (px);
    lr : AdamW peak learning rate (> 0); weight_decay : AdamW decay; warmup_steps : linear
    warm-up length; builder : extra keyword arguments of :func:`~.maskrcnn.maskrcnn`.
    """

    def __init__(self, arch: str = "slim", size: int = 64, lr: float = 2e-3, weight_decay: float = 1e-4,
                 warmup_steps: int = 100, builder: dict | None = None):
        super().__init__()
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.save_hyperparameters()
        self.builder_kwargs = {"backbone": arch, "size": int(size), **(builder or {})}
        self.model = maskrcnn(**self.builder_kwargs)
        self._val = []

    def forward(self, images):
        return self.model(images)

    def training_step(self, batch, batch_idx):
        images, targets = batch
        targets = [{k: v for k, v in t.items() if k in ("boxes", "labels", "masks")} for t in targets]
        losses = self.model(images, targets)
        loss = sum(losses.values())
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=len(images))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(images))
        return loss

    def on_train_epoch_start(self):
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and getattr(dm, "train_set", None) is not None:
            dm.train_set.set_epoch(self.current_epoch)

    def validation_step(self, batch, batch_idx):
        images, targets = batch
        outputs = self.model(images)
        for out, t, img in zip(outputs, targets, images):
            inst = decode(out, score_thresh=0.5)
            self._val.append(_image_metrics(inst, t, tuple(img.shape[-2:])) | {
                "pred": (inst.scores, inst.masks), "truth": t["masks"].numpy().astype(bool)})

    def on_validation_epoch_end(self):
        if not self._val:
            return
        v, self._val = self._val, []
        ious = [r["central_iou"] for r in v if np.isfinite(r["central_iou"])]
        found = sum(r["n_found"] for r in v)
        total = sum(r["n_contaminants"] for r in v)
        self.log("val/central_iou", float(np.mean(ious)) if ious else 0.0, prog_bar=True)
        self.log("val/contaminant_recall", found / max(total, 1))
        self.log("val/ap50", average_precision([r["pred"] for r in v], [r["truth"] for r in v]))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warm = min(int(self.hparams.warmup_steps), max(total // 5, 1))

        def factor(step):
            if step < warm:
                return (step + 1) / warm
            return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(total - warm, 1))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _image_metrics(inst, target, shape) -> dict:
    """Central IoU (NaN when the truth has no central) and contaminants found (IoU >= 0.5 with
    any detection) for one cutout."""
    truth = target["masks"].numpy().astype(bool)
    labels = target["labels"].numpy()
    k = pick_central(inst, shape)
    central_iou = float("nan")
    if (labels == CENTRAL).any():
        gt = truth[labels == CENTRAL][0]
        central_iou = float(mask_iou(inst.masks[k:k + 1], gt[None])[0, 0]) if k >= 0 else 0.0
    others = truth[labels != CENTRAL]
    iou = mask_iou(others, inst.masks)
    found = int((iou.max(1) >= 0.5).sum()) if iou.size else 0
    return {"central_iou": central_iou, "n_found": found, "n_contaminants": int(len(others))}


# ---------------------------------------------------------------------------------------------
# stage API

def build_module(**hparams) -> AutomaskModule:
    """An :class:`AutomaskModule` from hyper-parameters (``arch``, ``size``, ``lr``, ...; keys of
    :data:`DEFAULTS` that are not module arguments -- n_train, epochs, batch_size, cost -- are
    ignored, so ``build_module(**DEFAULTS)`` works)."""
    known = ("arch", "size", "lr", "weight_decay", "warmup_steps", "builder")
    return AutomaskModule(**{k: v for k, v in hparams.items() if k in known})


def build_datamodule(train_dir, val_dir, batch_size: int = DEFAULTS["batch_size"], seed: int = 0,
                     num_workers: int = 0, real=None, labels=None, n_train: int | None = None,
                     crop=DEFAULTS["crop"], real_options: dict | None = None, real_cache=None) -> AutomaskData:
    """The :class:`AutomaskData` for ``galmoss-auto train``; ``real`` + ``labels`` add
    pseudo-labelled real cutouts (see :func:`iter_real_instances`; both or neither), read with
    the run settings ``real_options`` and prepared once into the item store ``real_cache``
    (default: :func:`~galmoss_auto.data_scripts.item_store.cache_folder`); ``crop``: the
    training crops (default :data:`DEFAULTS`' ``crop``; None = whole simulated cutouts)."""
    return AutomaskData(train_dir, val_dir, batch_size=batch_size, seed=seed, num_workers=num_workers,
                        n_train=n_train, real=real, labels=labels, real_options=real_options,
                        real_cache=real_cache, crop=crop)


def inference_network(module) -> torch.nn.Module:
    """The network that :func:`export` saves (and ``train --init-weights`` loads into)."""
    return module.model if isinstance(module, AutomaskModule) else module


def evaluate(module, sim_dir, device="cpu", batch_size: int = 16, limit: int | None = None,
             check_fp16: bool = True) -> dict:
    """Mask metrics of the network against sep on a held-out simulation (``sim_dir``).

    Returns a flat dict: ``n``; for ``maskrcnn`` and ``sep``: ``<m>_central_iou`` (mean IoU of
    the central-galaxy mask with the truth footprint; 0 where no central was found),
    ``<m>_no_central`` (fraction), ``<m>_contaminant_recall`` (truth contaminants >= 10 px with
    >= 50% of their footprint masked or modelled as a neighbour); ``maskrcnn_ap50`` (mask AP at
    IoU 0.5, class-agnostic, COCO interpolation); with ``check_fp16`` also
    ``fp16_central_iou_delta`` (the same network with float16-rounded weights minus float32).
    """
    from .predict import MaskRCNNMasker, cutouts_from_shard
    from .sep_masker import SepMasker
    from .detect import detect

    net = inference_network(module)
    masker = MaskRCNNMasker(network=net, device=device)
    folders = _sim_folders(sim_dir)
    rows = []
    ap_pred, ap_truth = [], []
    kinds = {}
    for f in folders:
        kinds.update(_classes_by_id(Table.read(f / "objects.ecsv", format="ascii.ecsv")))
    n = 0
    for f in folders:
        for path in shard_files(f):
            shard = read_shard(path)
            cut = cutouts_from_shard(shard)
            if limit is not None:
                cut = cut[:max(limit - n, 0)]
            if not cut:
                break
            for start in range(0, len(cut), batch_size):
                chunk = cut[start:start + batch_size]
                results, details = masker.mask_batch(chunk, device, return_details=True)
                for c, res, d in zip(chunk, results, details):
                    inst = d.instances
                    i = c.meta["shard_index"]
                    seg = shard["segmentation"][i]
                    cls = kinds.get(c.id, {})
                    tgt = targets_from_segmentation(seg, cls)
                    ap_pred.append((inst.scores, inst.masks) if inst is not None else (np.zeros(0), np.zeros((0,) + c.shape, bool)))
                    ap_truth.append(tgt["masks"].numpy().astype(bool))
                    det = detect(c.image, c.sigma, c.mask)
                    sep_res = SepMasker()(c)
                    sep_central = det.segmap == det.central + 1 if det.central >= 0 else np.zeros(c.shape, bool)
                    rows.append(_compare(seg, cls, res, d, sep_res, sep_central))
            n += len(cut)
            if limit is not None and n >= limit:
                break
    out = {"n": len(rows)}
    for m in ("maskrcnn", "sep"):
        out[f"{m}_central_iou"] = float(np.mean([r[f"{m}_iou"] for r in rows])) if rows else float("nan")
        out[f"{m}_no_central"] = float(np.mean([r[f"{m}_iou"] == 0 for r in rows])) if rows else float("nan")
        found = sum(r[f"{m}_found"] for r in rows)
        total = sum(r["n_contaminants"] for r in rows)
        out[f"{m}_contaminant_recall"] = found / max(total, 1)
    out["maskrcnn_ap50"] = average_precision(ap_pred, ap_truth)
    if check_fp16:
        half = {k: (v.half().float() if v.is_floating_point() else v) for k, v in net.state_dict().items()}
        twin = maskrcnn(**_builder_kwargs(module))
        twin.load_state_dict(half)
        sub = evaluate(twin, sim_dir, device, batch_size, limit=min(len(rows), 64), check_fp16=False)
        ref = evaluate(net, sim_dir, device, batch_size, limit=min(len(rows), 64), check_fp16=False)
        out["fp16_central_iou_delta"] = sub["maskrcnn_central_iou"] - ref["maskrcnn_central_iou"]
    return out


def _builder_kwargs(module) -> dict:
    if isinstance(module, AutomaskModule):
        return dict(module.builder_kwargs)
    kw = getattr(module, "builder_kwargs", None)
    if kw is None:
        raise ValueError("pass the AutomaskModule (or a network with .builder_kwargs) to rebuild it")
    return dict(kw)


def _compare(seg, classes, res, details, sep_res, sep_central) -> dict:
    """Per-cutout central IoU and contaminant coverage for the learned and the sep masks (a
    learned result that fell back to sep is scored as what it is: sep's mask, no central)."""
    truth_central = seg == 1
    row = {}
    learned = details.central_mask if res.method == "maskrcnn" else None
    for m, r, central in (("maskrcnn", res, learned), ("sep", sep_res, sep_central)):
        if central is None:
            central = np.zeros(seg.shape, bool)
        inter = (central & truth_central).sum()
        union = (central | truth_central).sum()
        row[f"{m}_iou"] = float(inter / union) if union else 0.0
        covered = r.mask.copy()
        if m == "maskrcnn":
            for nb_mask in details.neighbour_masks:
                covered |= nb_mask
        found = total = 0
        for lab in np.unique(seg):
            if lab <= 1 or lab not in classes:
                continue
            fp = seg == lab
            if fp.sum() < 10:
                continue
            total += 1
            found += int((covered & fp).sum() >= 0.5 * fp.sum())
        row[f"{m}_found"], row["n_contaminants"] = found, total
    return row


def export(module, zoo_dir, *, survey: str, bands, training: dict, evaluation: dict,
           name: str | None = None, version: str = "1") -> Path:
    """Write the network into a model zoo (``galmoss_auto.models.write_zoo_entry``); returns the
    checkpoint's path.

    Floats are stored as float16 when ``evaluation["fp16_central_iou_delta"]`` shows no loss
    (>= -0.002), else float32.  ``training`` (command, seed, n_train, epochs, simulator preset,
    pixel_scale / psf_fwhm_arcsec ranges, ...) and ``evaluation`` go into the registry entry.
    """
    from galmoss_auto import models as zoo
    from galmoss_auto.automask.normalise import CLIP, SOFTENING

    from galmoss_auto import __version__ as pkg_version
    bands = [bands] if isinstance(bands, str) else list(bands)
    net = inference_network(module)
    kwargs = _builder_kwargs(module)
    delta = evaluation.get("fp16_central_iou_delta")
    fp16 = delta is not None and np.isfinite(delta) and delta >= -0.002
    tf = training.get("trained_for") or {}
    entry = {
        "name": name or f"automask-{survey}-{'-'.join(bands)}-{kwargs['backbone']}-v{version}",
        "stage": "automask", "survey": survey, "bands": bands, "version": str(version),
        "architecture": {"builder": "galmoss_auto.automask.maskrcnn:maskrcnn", "kwargs": kwargs},
        "input": {"normalisation": "asinh_snr", "formula": "asinh((image - sky) / (softening * sigma))",
                  "softening": SOFTENING, "clip": CLIP, "sky": "given, else sigma-clipped median S/N",
                  "channels": 1, "masked_pixels": 0.0},
        "output": {"classes": list(CLASSES), "score_thresh": 0.5, "mask_thresh": 0.5,
                   "format": "torchvision MaskRCNN detections (boxes, labels, scores, masks)"},
        "trained_for": {"size": list(tf.get("size", [64, 256])),
                        **{k: list(v) for k, v in tf.items() if k != "size"}},
        "training": {k: v for k, v in training.items() if k != "trained_for"} | {"galmoss_auto_version": pkg_version},
        "evaluation": {k: (round(float(v), 4) if isinstance(v, (float, np.floating)) else v)
                       for k, v in evaluation.items()},
        "urls": [], "licence": "BSD-3-Clause",
    }
    entry["file"] = entry["name"] + ".safetensors"
    path = zoo.write_zoo_entry(zoo_dir, entry, net.state_dict(), dtype=torch.float16 if fp16 else None,
                               reference_input=reference_input())
    return Path(path)


def reference_input(size: int = 64) -> torch.Tensor:
    """A fixed normalised input (2, 1, size, size): two Sersic-like blobs and a point source in
    unit noise, from a fixed generator; stored with each checkpoint with the outputs on it."""
    g = torch.Generator().manual_seed(1234)
    noise = torch.randn(2, size, size, generator=g)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    c = (size - 1) / 2
    r = torch.sqrt((xx - c) ** 2 + ((yy - c) / 0.7) ** 2)
    blob = 400 * torch.exp(-3.0 * (r / 5.0) ** 0.5) + 150 * torch.exp(-((xx - c - 15) ** 2 + (yy - c + 12) ** 2) / 4.0)
    image = torch.stack([blob, blob.flip(1)]) + noise
    return normalise_batch(image, torch.ones_like(image))[:, None]


def report_figures(module, sim_dir, out_dir, n: int = 8, device="cpu") -> list[Path]:
    """Example masks (PNG): for ``n`` held-out cutouts, the stretched image, the truth
    segmentation, and the learned result (central footprint, masked pixels, neighbours)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .predict import MaskRCNNMasker, cutouts_from_shard

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    masker = MaskRCNNMasker(network=inference_network(module), device=device)
    shard = read_shard(shard_files(_sim_folders(sim_dir)[0])[0])
    cut = cutouts_from_shard(shard)[:n]
    results, details = masker.mask_batch(cut, device, return_details=True)
    fig, axes = plt.subplots(len(cut), 3, figsize=(7.5, 2.5 * len(cut)), squeeze=False)
    for row, (c, r, d) in enumerate(zip(cut, results, details)):
        z = normalise_batch(torch.from_numpy(c.image.astype(np.float32))[None],
                            torch.from_numpy(c.sigma.astype(np.float32))[None])[0].numpy()
        seg = shard["segmentation"][c.meta["shard_index"]]
        show = np.zeros(c.shape + (3,))
        if d.central_mask is not None:
            show[..., 1] = d.central_mask
        show[..., 0] = r.mask
        for nb_mask in d.neighbour_masks:
            show[..., 2] = np.maximum(show[..., 2], nb_mask)
        axes[row, 0].imshow(z, origin="lower", cmap="gray", vmin=-0.5, vmax=4)
        axes[row, 1].imshow(seg, origin="lower", cmap="tab20", interpolation="nearest")
        axes[row, 2].imshow(0.5 * show + 0.5 * np.clip(z / 4, 0, 1)[..., None], origin="lower")
        axes[row, 0].set_ylabel(f"{c.id}\n{r.method} flags={r.flags}", fontsize=6)
        for a in axes[row]:
            a.set_xticks([]), a.set_yticks([])
    axes[0, 0].set_title("asinh S/N")
    axes[0, 1].set_title("truth segmentation")
    axes[0, 2].set_title("green central, red masked, blue neighbours", fontsize=7)
    fig.tight_layout()
    path = out_dir / "automask_examples.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
