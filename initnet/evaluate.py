"""How good the starts are: initnet against the truth and against sep, on held-out simulations.

Statistics (per parameter, over galaxies): ``sigma`` = robust standard deviation
(1.4826 x median absolute deviation) and ``bias`` = median of the error, for

* ``mag`` (predicted - true, mag), ``log_re`` (log10 ratio, dex), ``n`` (fractional,
  (n_pred - n_true) / n_true), ``log_n`` (log10 ratio, dex), ``x``, ``y`` (px), ``q``, ``pa``
  (deg, wrapped; galaxies with q < 0.8 only, where the angle is defined);

  the fractional ``n`` scatter of a start biased low is shrunk by that bias (n_pred = n_true / 2
  with 40 % noise scores 0.2), so starts are compared on ``log_n``, which a bias does not move;
* overall and per S/N bin (:data:`SNR_BINS`, S/N of the reference flux inside the aperture).

The flat result keys read ``<method>_<stat>_<param>[_snr<lo>-<hi>]`` with method ``initnet``
or ``sep``, plus ``n``, ``fallback_fraction`` and ``ms_per_cutout`` (network with input
preparation, batch 256, on the device used).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from galmoss_auto.fitting.cutout import Cutout

from .base import PARAMS
from .data import TARGET_KEYS, SimItems

__all__ = ["SNR_BINS", "load_sim", "sep_starts", "start_errors", "start_metrics", "evaluate",
           "report_figures"]

SNR_BINS = ((0, 20), (20, 50), (50, 100), (100, 500), (500, np.inf))


def robust_sigma(v) -> float:
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def _has_valid_pixel(item) -> bool:
    good = ~item["mask"].numpy().astype(bool) & np.isfinite(item["image"].numpy()) \
        & (item["sigma"].numpy() > 0)
    return bool(good.any())


def load_sim(sim_dir, limit: int | None = None) -> tuple[list, dict]:
    """(cutouts (masks = contaminant footprints), truth {p: array}) of a simulation folder."""
    items = list(SimItems(sim_dir, limit=limit))
    # a central galaxy buried under its neighbours' footprints leaves no pixel to start from
    # (the pipeline gives such a cutout BAD_INPUT); it cannot be scored, so it is left out
    items = [it for it in items if _has_valid_pixel(it)]
    if not items:
        raise ValueError(f"{sim_dir}: no cutout with a single-Sérsic truth and a valid pixel")
    cutouts = [Cutout(id=it["id"], image=it["image"].numpy().astype(np.float64),
                      sigma=it["sigma"].numpy().astype(np.float64), psf=it["psf"].numpy().astype(np.float64),
                      mask=it["mask"].numpy(), zeropoint=it["zeropoint"], pixel_scale=it["pixel_scale"])
               for it in items]
    truth = {k: np.array([it["target"][k] for it in items]) for k in TARGET_KEYS}
    return cutouts, truth


def sep_starts(cutouts) -> tuple[dict, np.ndarray]:
    """sep initializer starts {p: array} and flags of ``cutouts``."""
    from .sep_init import SepInitializer

    sep = SepInitializer()
    res = [sep(c) for c in cutouts]
    return {p: np.array([r.params[p] for r in res]) for p in PARAMS}, np.array([r.flags for r in res])


def start_errors(pred: dict, truth: dict) -> dict:
    """Per-galaxy errors {param: array} (see the module docstring for the definitions)."""
    dpa = (np.asarray(pred["pa"]) - truth["pa"] + 90.0) % 180.0 - 90.0
    return {"mag": pred["mag"] - truth["mag"],
            "log_re": np.log10(np.clip(pred["r_e"], 1e-3, None) / truth["r_e"]),
            "n": (pred["n"] - truth["n"]) / truth["n"],
            "log_n": np.log10(np.clip(pred["n"], 1e-3, None) / truth["n"]),
            "x": pred["x"] - truth["x"], "y": pred["y"] - truth["y"],
            "q": pred["q"] - truth["q"], "pa": np.where(truth["q"] < 0.8, dpa, np.nan)}


def start_metrics(pred: dict, truth: dict, snr: np.ndarray, method: str) -> dict:
    """Flat {<method>_<stat>_<param>[_snr..]: value} of starts ``pred`` against ``truth``."""
    err = start_errors(pred, truth)
    out = {}
    for p, e in err.items():
        out[f"{method}_sigma_{p}"] = robust_sigma(e)
        out[f"{method}_bias_{p}"] = float(np.nanmedian(e)) if np.isfinite(e).any() else float("nan")
        if p in ("mag", "log_re", "n", "log_n"):
            for lo, hi in SNR_BINS:
                sel = (snr >= lo) & (snr < hi)
                tag = f"_snr{lo:g}-{hi:g}"
                out[f"{method}_sigma_{p}{tag}"] = robust_sigma(e[sel]) if sel.sum() >= 5 else float("nan")
                out[f"{method}_bias_{p}{tag}"] = float(np.nanmedian(e[sel])) if sel.sum() >= 5 else float("nan")
    for lo, hi in SNR_BINS:
        out[f"count_snr{lo:g}-{hi:g}"] = int(((snr >= lo) & (snr < hi)).sum())
    return out


def _initializer(module):
    from .predict import InitNetInitializer
    if isinstance(module, InitNetInitializer):
        return module
    return InitNetInitializer.from_module(module, batch_size=256)


def evaluate(module, sim_dir, device="cpu", sep: bool = True, limit: int | None = None) -> dict:
    """Metrics of ``module`` (an InitNetModule or InitNetInitializer) on ``sim_dir`` (a
    ``simulate()`` folder never used in training), against the truth and against sep."""
    cutouts, truth = load_sim(sim_dir, limit)
    init = _initializer(module)
    init.predict(cutouts[:8], device)  # warm-up (first-call allocations)
    t0 = time.perf_counter()
    values, _, ok, snr = init.predict(cutouts, device)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    # a galaxy that would fall back is scored with its sep start (what the pipeline would use)
    out = {"n": len(cutouts), "fallback_fraction": float(1.0 - ok.mean()),
           "ms_per_cutout": 1e3 * elapsed / len(cutouts)}
    if sep or not ok.all():
        sep_vals, _ = sep_starts(cutouts)
        used = {p: np.where(ok, values[p], sep_vals[p]) for p in PARAMS}
    else:
        used = values
    out |= start_metrics(used, truth, snr, "initnet")
    if sep:
        out |= start_metrics(sep_vals, truth, snr, "sep")
    return out


def report_figures(module, sim_dir, out_dir, limit: int | None = 1000) -> list[Path]:
    """Predicted against true mag, r_e, n, q (initnet in colour, sep in grey): one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cutouts, truth = load_sim(sim_dir, limit)
    init = _initializer(module)
    values, _, ok, snr = init.predict(cutouts, "cpu")
    sep_vals, _ = sep_starts(cutouts)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
    for ax, p, log in zip(axes, ("mag", "r_e", "n", "q"), (False, True, True, False)):
        t = truth[p]
        ax.scatter(t, sep_vals[p], s=4, c="0.65", label="sep", rasterized=True)
        ax.scatter(t[ok], values[p][ok], s=4, c=np.log10(np.clip(snr[ok], 1, None)), cmap="viridis",
                   label="initnet", rasterized=True)
        lo, hi = np.nanmin(t), np.nanmax(t)
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel(f"true {p}")
        ax.set_ylabel(f"start {p}")
    axes[0].legend(loc="upper left", markerscale=3)
    fig.suptitle(f"initnet vs sep starts on {Path(sim_dir).name} (colour: log10 S/N)")
    fig.tight_layout()
    path = out_dir / "initnet_predicted_vs_true.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
