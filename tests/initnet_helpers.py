"""Tiny synthetic data for the initnet tests: galaxies rendered by the fitter's own renderer
plus Gaussian noise (no GalSim needed), 32-48 px."""

from __future__ import annotations

import math

import numpy as np
import torch

from galmoss_auto.fitting.cutout import Cutout
from galmoss_auto.fitting.tensor_render import render_batch


def moffat_psf(size=11, fwhm=3.0, beta=3.5):
    r = np.hypot(*np.mgrid[-(size // 2):size // 2 + 1, -(size // 2):size // 2 + 1])
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
    p = (1 + (r / alpha) ** 2) ** -beta
    return (p / p.sum()).astype(np.float32)


def make_galaxies(n=8, size=40, seed=0, noise=0.05, zp=25.0):
    """(cutouts, truth dict of arrays in catalog conventions, items list for collate)."""
    rng = np.random.default_rng(seed)
    truth = {"x": size / 2 + 0.5 + rng.uniform(-1, 1, n), "y": size / 2 + 0.5 + rng.uniform(-1, 1, n),
             "mag": rng.uniform(17.5, 19.5, n), "r_e": rng.uniform(2.0, 5.0, n),
             "n": rng.uniform(0.8, 3.0, n), "q": rng.uniform(0.4, 0.95, n), "pa": rng.uniform(-80, 80, n)}
    psf = np.stack([moffat_psf() for _ in range(n)])
    p = {k: torch.tensor(v, dtype=torch.float32) for k, v in truth.items()}
    p["x"], p["y"], p["pa"] = p["x"] - 1, p["y"] - 1, torch.deg2rad(p["pa"])
    model = render_batch(p, torch.full((n,), zp), torch.as_tensor(psf), (size, size)).numpy()
    image = model + rng.normal(0, noise, model.shape)
    cutouts, items = [], []
    for i in range(n):
        c = Cutout(id=f"g{i}", image=image[i].astype(np.float64), sigma=np.full((size, size), noise),
                   psf=psf[i].astype(np.float64), mask=np.zeros((size, size), bool), zeropoint=zp,
                   pixel_scale=0.262)
        cutouts.append(c)
        items.append({"image": torch.tensor(image[i], dtype=torch.float32),
                      "sigma": torch.full((size, size), noise), "mask": torch.zeros(size, size, dtype=torch.bool),
                      "psf": torch.as_tensor(psf[i]), "zeropoint": zp, "pixel_scale": 0.262,
                      "target": {k: float(v[i]) for k, v in truth.items()}, "id": f"g{i}"})
    return cutouts, truth, items


TINY = {"arch": "compact", "arch_kwargs": {"widths": [8, 8, 16, 16], "blocks": [1, 1, 1, 1], "hidden": 16},
        "crop": 32, "aperture": 10.0}
