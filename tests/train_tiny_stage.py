"""A tiny stage with the interface ``galmoss-auto train`` drives (DEFAULTS, build_module,
build_datamodule, evaluate, export, report_figures), for testing the orchestration (DDP,
resume, zoo, report) in seconds: a 4-channel convolution and a linear layer predicting the
central galaxy's magnitude from the S/N image.  Used by tests/test_train.py only."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn

from galmoss_auto.data_scripts.shards import read_shard, shard_files

DEFAULTS = {"n_train": 16, "epochs": 2, "batch_size": 4, "lr": 1e-2, "arch": "tiny"}
MAG0 = 18.0


def tiny_net(width: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(width, 1))


class TinyModule(L.LightningModule):
    def __init__(self, lr: float = 1e-2, arch: str = "tiny", width: int = 4):
        super().__init__()
        self.save_hyperparameters()
        self.net = tiny_net(width)

    def forward(self, x):
        return self.net(x).squeeze(1)

    def _loss(self, batch):
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def build_module(lr: float = 1e-2, arch: str = "tiny", width: int = 4) -> TinyModule:
    return TinyModule(lr=lr, arch=arch, width=width)


def load_split(folder) -> torch.utils.data.TensorDataset:
    xs, ys = [], []
    for f in shard_files(folder):
        s = read_shard(f)
        xs.append(np.arcsinh(s["image"] / s["sigma"]) / 3.0)
        ys.append(s["truth_sersic_mag"] - MAG0)
    x = torch.from_numpy(np.concatenate(xs)[:, None].astype(np.float32))
    y = torch.from_numpy(np.concatenate(ys).astype(np.float32))
    return torch.utils.data.TensorDataset(x, y)


class TinyData(L.LightningDataModule):
    def __init__(self, train_dir, val_dir, batch_size, seed, num_workers):
        super().__init__()
        self.train_dir, self.val_dir = train_dir, val_dir
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers

    def setup(self, stage=None):
        self.train, self.val = load_split(self.train_dir), load_split(self.val_dir)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(self.seed)
        return torch.utils.data.DataLoader(self.train, batch_size=self.batch_size, shuffle=True,
                                           generator=g, num_workers=self.num_workers)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.val, batch_size=self.batch_size,
                                           num_workers=self.num_workers)


def build_datamodule(train_dir, val_dir, batch_size=4, seed=0, num_workers=0, real=None,
                     labels=None, real_options=None) -> TinyData:
    if real is not None:
        raise ValueError("the tiny stage does not fine-tune on real cutouts")
    return TinyData(train_dir, val_dir, batch_size, seed, num_workers)


def evaluate(module, sim_dir, device="cpu") -> dict:
    data = load_split(sim_dir)
    module = module.to(device).eval()
    with torch.no_grad():
        pred = module(data.tensors[0].to(device)).cpu()
    y = data.tensors[1]
    return {"tiny": {"mae_mag": float((pred - y).abs().mean())},
            "mean": {"mae_mag": float((y.mean() - y).abs().mean())}}


def export(module, zoo_dir, *, survey, bands, training, evaluation, version: str = "1") -> Path:
    from galmoss_auto.models import write_zoo_entry
    suffix = "" if version == "1" else f"-v{version}"
    entry = {"name": f"initnet-tiny-{survey}-{'-'.join(bands)}{suffix}", "stage": "initnet",
             "survey": survey, "bands": list(bands), "version": "0.0.1",
             "architecture": {"builder": "train_tiny_stage:tiny_net", "kwargs": {}},
             "training": training, "evaluation": {"mae_mag": evaluation["tiny"]["mae_mag"]},
             "licence": "BSD-3-Clause"}
    return write_zoo_entry(zoo_dir, entry, module.net.state_dict())


def report_figures(module, sim_dir, out_dir) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    data = load_split(sim_dir)
    with torch.no_grad():
        pred = module.cpu()(data.tensors[0]).numpy() + MAG0
    true = data.tensors[1].numpy() + MAG0
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.scatter(true, pred, s=6)
    ax.set_xlabel("true mag")
    ax.set_ylabel("predicted mag")
    out = Path(out_dir) / "pred_vs_true.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return [out]
