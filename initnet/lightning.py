"""Training the initializer with Lightning, and the stage API ``galmoss-auto train`` calls.

Stage API (used by :mod:`galmoss_auto.pipelines`' ``train``):

* :data:`DEFAULTS`: the documented default size and its cost;
* :func:`build_module` ``(**hparams) -> InitNetModule``;
* :func:`build_datamodule` ``(train_dir, val_dir, batch_size, seed, num_workers, real, labels,
  real_options, real_cache)``;
* :func:`evaluate` ``(module, sim_dir, device) -> dict`` (starts against the truth and against sep
  on a held-out simulation folder; :mod:`galmoss_auto.initnet.evaluate`);
* :func:`export` ``(module, zoo_dir, *, survey, bands, training, evaluation) -> Path`` (a zoo
  entry: safetensors + registry; :mod:`galmoss_auto.initnet.export`);
* :func:`report_figures` ``(module, sim_dir, out_dir) -> list[Path]`` (predicted vs true PNG).

Example (what ``train`` does)::

    from lightning import Trainer
    dm = build_datamodule("sim/train", "sim/val", batch_size=64, seed=1)
    module = build_module()
    Trainer(max_epochs=DEFAULTS["epochs"], deterministic=True).fit(module, dm)
    export(module, "zoo", survey="sdss", bands=["r"], training={...}, evaluation=evaluate(module, "sim/test"))

The network runs in the main process (batches are prepared on its device by
:func:`~galmoss_auto.initnet.inputs.prepare_inputs`); DataLoader workers only read shards.
Under DDP each rank reads its own shards (``rank``/``world_size`` from the trainer).
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import torch

from galmoss_auto.data_scripts.item_store import ItemWriter, Mixed, StoredItems, cache_folder, read_index

from .data import SimItems, collate, labelled_items, labels_from_catalog
from .encoding import targets_from_catalog, unstandardise
from .inputs import N_PROFILE, N_SCALARS, prepare_inputs
from .loss import InitNetLoss
from .resnet import build_initnet

__all__ = ["DEFAULTS", "dihedral", "InitNetModule", "InitNetDataModule", "build_module",
           "inference_network", "build_datamodule", "evaluate", "export", "report_figures"]

#: Default training size.  Cost measured on the 2-core CPU VM, one thread per job, two jobs at
#: once: simulating 36000 64-px SDSS cutouts takes ~3 min (HSC/LSST ~2x longer); training runs
#: at ~125 samples/s with the χ² term, so 2 epochs of 36000 (1125 steps of 64) take ~10 min;
#: a GPU is far faster.  The smoke size (n_train 600, epochs 1) trains in ~5 s.
DEFAULTS = {"n_train": 36000, "n_val": 600, "epochs": 2, "batch_size": 64, "lr": 2e-3,
            "arch": "compact", "lam": 1.0, "param_weight": 1.0, "size": 64,
            # measured 2026-12-02/03 (benchmarks/results/2026-12-03-vm-cpu-initnet.md): the
            # residual form over the crop's own measured baselines and centre pooling lowered
            # the held-out scatter in r_e, q, centre and angle; the curve-of-growth scalars in
            # n and mag over all S/N; with those baselines the joint NLL on the means ("nll")
            # beats the MSE ("mse", needed by the first form) in mag, r_e and most in n
            "residual": True, "arch_kwargs": {"pool": "avg+centre"}, "mean_loss": "nll",
            "profile": True}


class InitNetModule(L.LightningModule):
    """The network, its loss and its optimiser.

    arch : "compact" | "compact-wide" | "resnet18" | "resnet34" | "resnet50" (see
        :mod:`~galmoss_auto.initnet.resnet`).
    lr, weight_decay : AdamW settings; a one-cycle schedule over the run.
    lam, param_weight, likelihood, mean_loss : the loss (:class:`~galmoss_auto.initnet.loss.InitNetLoss`).
    crop, aperture, search_radius : the input preparation (:mod:`~galmoss_auto.initnet.inputs`).
    arch_kwargs : extra builder arguments (``widths``, ``blocks``, ``hidden``).
    augment : train on a random flip/transpose of each batch (:func:`dihedral`), 8x the data.
    residual : predict corrections to the crop's own cheap measurements (the residual form of
        :mod:`~galmoss_auto.initnet.encoding`) instead of values about constant shifts.
    profile : also feed the network the curve-of-growth scalars (item 6 of
        :mod:`~galmoss_auto.initnet.inputs`).

    The constructor's defaults are the first checkpoints' settings (so that their Lightning
    checkpoints, which lack the newer keys, resume as they were trained); new training takes
    :data:`DEFAULTS` through :func:`build_module`.
    """

    def __init__(self, arch: str = "compact", lr: float = 2e-3, weight_decay: float = 1e-4,
                 lam: float = 1.0, param_weight: float = 1.0, likelihood: str = "gaussian",
                 mean_loss: str = "nll", crop: int = 64, aperture: float = 16.0, search_radius: float = 6.0,
                 arch_kwargs: dict | None = None, augment: bool = True, residual: bool = False,
                 profile: bool = False, **ignored):
        super().__init__()
        self.save_hyperparameters(ignore=["ignored"])
        self.arch_kwargs = {"arch": arch, **(arch_kwargs or {})}
        if profile:
            self.arch_kwargs["n_scalars"] = N_SCALARS + N_PROFILE
        self.net = build_initnet(**self.arch_kwargs)
        self.loss = InitNetLoss(lam=lam, param_weight=param_weight, likelihood=likelihood,
                                mean_loss=mean_loss)
        self._val = []

    # -- data -> network ----------------------------------------------------------------------
    def prepare(self, batch: dict):
        """(NetInputs, targets (B, 8) or None) for a collated batch, on this module's device."""
        dev = self.device
        hp = self.hparams
        inputs = prepare_inputs(batch["image"].to(dev), batch["sigma"].to(dev), batch["mask"].to(dev),
                                batch["psf"].to(dev), batch["zeropoint"].to(dev),
                                batch["pixel_scale"].to(dev), crop=hp.crop, aperture=hp.aperture,
                                search_radius=hp.search_radius, shapes=batch.get("shapes"),
                                profile=bool(hp.get("profile", False)),
                                oversampling=batch["oversampling"].to(dev) if "oversampling" in batch else None,
                                psf_includes_pixel=(batch["psf_includes_pixel"].to(dev)
                                                    if "psf_includes_pixel" in batch else None))
        t = batch["target"].to(dev)
        target = targets_from_catalog(*t.unbind(1), inputs.origin, inputs.centre, inputs.mag_ref.double())
        return inputs, target.float()

    def forward(self, inputs):
        return self.net(inputs.x, inputs.scalars)

    def shift(self, inputs):
        """The standardisation shift of a batch: its baseline in the residual form, else None."""
        return inputs.baseline if self.hparams.get("residual", False) else None

    # -- Lightning hooks ----------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        if self.hparams.augment:
            g = torch.Generator().manual_seed(int(self.hparams.get("seed", 0)) * 100003 + self.global_step)
            batch = dihedral(batch, *(bool(b) for b in torch.randint(0, 2, (3,), generator=g)))
        inputs, target = self.prepare(batch)
        mean, log_sigma = self(inputs)
        loss, terms = self.loss(mean, log_sigma, target, inputs, self.shift(inputs))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(target))
        for k, v in terms.items():
            self.log(f"train/{k}", v, batch_size=len(target))
        return loss

    def validation_step(self, batch, batch_idx):
        inputs, target = self.prepare(batch)
        mean, log_sigma = self(inputs)
        loss, terms = self.loss(mean, log_sigma, target, inputs, self.shift(inputs))
        self.log("val/loss", loss, prog_bar=True, batch_size=len(target))
        self._val.append((unstandardise(mean.float(), self.shift(inputs)) - target).detach().cpu())

    def on_validation_epoch_end(self):
        if not self._val:
            return
        d = torch.cat(self._val).numpy()
        self._val = []
        rs = lambda v: float(1.4826 * np.median(np.abs(v - np.median(v))))
        self.log("val/sigma_mag", rs(d[:, 2]))
        self.log("val/sigma_log_re", rs(d[:, 3]))
        self.log("val/sigma_log_n", rs(d[:, 4]))

    def on_train_epoch_start(self):
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and getattr(dm, "train_set", None) is not None:
            dm.train_set.set_epoch(self.current_epoch)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        try:
            total = int(self.trainer.estimated_stepping_batches)
        except Exception:
            total = 0
        if not total or total <= 1 or not math.isfinite(total):
            return opt
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr, total_steps=total,
                                                    pct_start=0.15)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def dihedral(batch: dict, flip_x: bool, flip_y: bool, transpose: bool) -> dict:
    """The batch mirrored in x and/or y and/or transposed, with its targets (catalog
    conventions) transformed to match: x -> W + 1 - x and pa -> -pa for a flip in x (y alike),
    x <-> y and pa -> 90 - pa for a transpose.  Only for batches of equal square cutouts
    (others are returned as they are: padding would move their centres)."""
    H, W = batch["image"].shape[-2:]
    if H != W or len(set(batch.get("shapes") or [(H, W)])) != 1 or not (flip_x or flip_y or transpose):
        return batch
    out = dict(batch)
    t = batch["target"].clone()               # columns x, y, mag, r_e, n, q, pa
    arrays = {k: batch[k] for k in ("image", "sigma", "mask", "psf")}
    if flip_x:
        arrays = {k: v.flip(-1) for k, v in arrays.items()}
        t[:, 0], t[:, 6] = W + 1 - t[:, 0], -t[:, 6]
    if flip_y:
        arrays = {k: v.flip(-2) for k, v in arrays.items()}
        t[:, 1], t[:, 6] = H + 1 - t[:, 1], -t[:, 6]
    if transpose:
        arrays = {k: v.transpose(-1, -2) for k, v in arrays.items()}
        t[:, [0, 1]] = t[:, [1, 0]]
        t[:, 6] = 90.0 - t[:, 6]
    t[:, 6] = 90.0 - torch.remainder(90.0 - t[:, 6], 180.0)
    out.update({k: v.contiguous() for k, v in arrays.items()})
    out["target"] = t
    return out


class InitNetDataModule(L.LightningDataModule):
    """Simulated shards (one folder or several, interleaved) and/or real labelled cutouts.

    train_dir, val_dir : ``simulate()`` output folders (or lists of them); may be None when
        ``real`` is given (then 10 % of the labelled cutouts, chosen by ``seed``, validate).
    real : list of Cutouts (masks applied), or anything :func:`galmoss_auto.pipelines` can read
        (a manifest, a folder, a glob) given as a str/Path.
    labels : catalog (Table or path) of converged fits; rows without a quality flag are used
        (:func:`~galmoss_auto.initnet.data.labels_from_catalog`).
    real_options : the settings (:class:`~galmoss_auto.pipelines.config.RunConfig` fields) the
        real cutouts are prepared with when ``real`` is a path (see :func:`_read_real`).
    real_cache : folder of the prepared real items (default: a folder of the system's
        temporary directory named by what they are prepared from,
        :func:`~galmoss_auto.data_scripts.item_store.cache_folder`).

    The real cutouts are prepared once, in :meth:`prepare_data` (one process per machine; a
    chunk of cutouts in memory at a time), into item stores ``real_cache/train`` and
    ``real_cache/val`` on disk, reused while what they are prepared from is unchanged; each
    rank and data-loader worker then streams its own share of them
    (:class:`~galmoss_auto.data_scripts.item_store.StoredItems`).
    """

    def __init__(self, train_dir=None, val_dir=None, batch_size: int = 64, seed: int = 0,
                 num_workers: int = 0, real=None, labels=None, real_options: dict | None = None,
                 real_cache=None):
        super().__init__()
        if train_dir is None and real is None:
            raise ValueError("give train_dir (simulated shards) and/or real cutouts with labels")
        if (real is None) != (labels is None):
            raise ValueError("real cutouts and labels go together: give both or neither")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.train_dir, self.val_dir = train_dir, val_dir
        self.batch_size, self.seed, self.num_workers = int(batch_size), int(seed), int(num_workers)
        self.real, self.real_options = real, dict(real_options or {})
        self.labels = None if labels is None else (
            labels if isinstance(labels, dict) else labels_from_catalog(labels))
        self.real_key = None if real is None else _real_key(real, self.labels, self.real_options, self.seed)
        self.real_cache = None if real is None else Path(
            real_cache if real_cache is not None else cache_folder("initnet", self.real_key))
        self.train_set = self.val_set = None

    @staticmethod
    def _folders(x):
        if x is None:
            return []
        return list(x) if isinstance(x, (list, tuple)) else [x]

    def prepare_data(self):
        """Prepare the real cutouts into the item stores (skipped when they are there)."""
        if self.real is None or all(read_index(self.real_cache / part, self.real_key) for part in ("train", "val")):
            return
        # the held-out ids are drawn from the labelled ids of the input, so that the stores can
        # be written in one pass over the cutouts
        ids = sorted(set(self.labels) & set(_real_ids(self.real)))
        rng = np.random.default_rng(self.seed)
        held = set(rng.choice(ids, size=max(1, len(ids) // 10), replace=False)) if len(ids) >= 10 else set()
        with ItemWriter(self.real_cache / "train", self.real_key) as train, \
                ItemWriter(self.real_cache / "val", self.real_key) as val:
            for item in labelled_items(_read_real(self.real, self.real_options, ids=self.labels), self.labels):
                (val if item["id"] in held else train).add(item)

    def setup(self, stage=None):
        rank, world = 0, 1
        if self.trainer is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
        else:                       # used without a Trainer: nobody called prepare_data
            self.prepare_data()
        train = [SimItems(f, shuffle=True, seed=self.seed, rank=rank, world_size=world)
                 for f in self._folders(self.train_dir)]
        val = [SimItems(f, shuffle=False, rank=rank, world_size=world) for f in self._folders(self.val_dir)]
        if self.real is not None:
            if sum(read_index(self.real_cache / part)["n"] for part in ("train", "val")) == 0:
                raise ValueError(f"{self.real}: no cutout has a label (ids must match the label catalog's "
                                 "rows without a quality flag)")
            for part, into, shuffle in (("train", train, True), ("val", val, False)):
                store = StoredItems(self.real_cache / part, shuffle=shuffle, seed=self.seed,
                                    rank=rank, world_size=world)
                if len(store):
                    into.append(store)
        self.train_set = Mixed(train, seed=self.seed)
        self.val_set = Mixed(val, seed=self.seed) if val else None

    def _loader(self, ds):
        return torch.utils.data.DataLoader(ds, batch_size=self.batch_size, collate_fn=collate,
                                           num_workers=self.num_workers,
                                           persistent_workers=self.num_workers > 0)

    def train_dataloader(self):
        return self._loader(self.train_set)

    def val_dataloader(self):
        return self._loader(self.val_set) if self.val_set is not None else []


def _is_cutout_list(real) -> bool:
    return isinstance(real, (list, tuple)) and all(hasattr(c, "image") for c in real)


def _real_ids(real) -> list[str]:
    """The galaxy ids of real cutouts (a list of Cutouts or anything ``run`` reads)."""
    if _is_cutout_list(real):
        return [str(c.id) for c in real]
    from galmoss_auto.pipelines.inputs import read_inputs
    return [str(r["id"]) for r in read_inputs(str(real))]


def _real_key(real, labels: dict, options: dict, seed: int) -> str:
    """What the prepared real items depend on (see
    :func:`~galmoss_auto.pipelines.run.training_cutouts_key`)."""
    import hashlib
    import json
    extra = {"stage": "initnet", "labels": labels, "seed": seed, "format": 1}
    if _is_cutout_list(real):   # cutouts in memory: their ids and pixels
        h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
        for c in real:
            h.update(str(c.id).encode())
            for a in (c.image, c.sigma, c.mask, c.psf):
                h.update(b"-" if a is None else np.ascontiguousarray(a).tobytes())
        return h.hexdigest()
    from galmoss_auto.pipelines.run import training_cutouts_key
    return training_cutouts_key(real, options, **extra)


def _read_real(real, options: dict | None = None, ids=None):
    """The initializer's view of real cutouts, one at a time: a list of Cutouts is used as
    given (masks applied, as the initializer is to see them); anything ``run`` reads (a
    manifest, a folder, a glob, one FITS file) is prepared as ``run`` prepares it
    (:func:`galmoss_auto.pipelines.run.prepare_training_cutouts`: survey defaults, sky
    measured, the run's masker, the modelled neighbours hidden), with ``options`` the
    :class:`~galmoss_auto.pipelines.config.RunConfig` settings of the run that labelled them
    (mask, sky, survey, band, zoo, psf, zeropoint, pixel_scale, ...).  Cutouts that cannot be
    read or masked are left out with a warning.  ``ids``: only these galaxies are prepared."""
    if _is_cutout_list(real):
        yield from real
        return
    from galmoss_auto.pipelines.prepare import init_view
    from galmoss_auto.pipelines.run import prepare_training_cutouts

    for g in prepare_training_cutouts(real, options, ids=ids):
        yield init_view(g)


def inference_network(module) -> torch.nn.Module:
    """The network that :func:`export` saves (and ``train --init-weights`` loads into)."""
    return module.net


def build_module(**hparams) -> InitNetModule:
    """An untrained :class:`InitNetModule`; keys of :data:`DEFAULTS` that are not module
    settings (n_train, epochs, batch_size, size) are accepted and ignored."""
    known = {"arch", "lr", "weight_decay", "lam", "param_weight", "likelihood", "mean_loss", "crop", "aperture",
             "search_radius", "arch_kwargs", "augment", "residual", "profile"}
    data_keys = {"n_train", "n_val", "epochs", "batch_size", "size", "seed"}
    unknown = set(hparams) - known - data_keys
    if unknown:
        raise ValueError(f"unknown initnet setting(s) {sorted(unknown)}; known: {sorted(known | data_keys)}")
    args = {k: v for k, v in {**DEFAULTS, **hparams}.items() if k in known}
    return InitNetModule(**args)


def build_datamodule(train_dir, val_dir, batch_size: int = DEFAULTS["batch_size"], seed: int = 0,
                     num_workers: int = 0, real=None, labels=None,
                     real_options: dict | None = None, real_cache=None) -> InitNetDataModule:
    """The data module over simulated folders and/or real labelled cutouts (see
    :class:`InitNetDataModule`)."""
    return InitNetDataModule(train_dir, val_dir, batch_size=batch_size, seed=seed,
                             num_workers=num_workers, real=real, labels=labels,
                             real_options=real_options, real_cache=real_cache)


def evaluate(module, sim_dir, device="cpu", **kw) -> dict:
    """See :func:`galmoss_auto.initnet.evaluate.evaluate`."""
    from .evaluate import evaluate as _evaluate
    return _evaluate(module, sim_dir, device=device, **kw)


def report_figures(module, sim_dir, out_dir) -> list:
    """See :func:`galmoss_auto.initnet.evaluate.report_figures`."""
    from .evaluate import report_figures as _figures
    return _figures(module, sim_dir, out_dir)


def export(module, zoo_dir, *, survey: str, bands, training: dict, evaluation: dict, **kw):
    """See :func:`galmoss_auto.initnet.export.export`."""
    from .export import export as _export
    return _export(module, zoo_dir, survey=survey, bands=bands, training=training,
                   evaluation=evaluation, **kw)
