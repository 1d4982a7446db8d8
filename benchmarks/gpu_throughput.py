"""Fit throughput on a GPU (or CPU): in-memory fits and an end-to-end run from FITS files.

The device machine lacks GalSim and sep, so the cutouts are simulated beforehand with
``--make DATA.npz`` (GalSim + the same sep initial guesses as run_benchmark.py) and tiled to
the requested count with fresh noise on the device:

    python benchmarks/gpu_throughput.py --make benchmarks/work/gpu_set.npz --n 200      # here
    python benchmarks/gpu_throughput.py --data benchmarks/work/gpu_set.npz --device cuda \\
        --n-fit 8192 --e2e 8289 --out benchmarks/results/                               # there

Reports galaxies/s for single-Sérsic + PSF fits with covariance errors at several batch sizes,
the accuracy against truth, and the wall time of 8,289 cutouts read from FITS files (image,
sigma, one PSF) by DataLoader workers and fitted as they arrive.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.metrics import CATASTROPHIC_DLOGRE, CATASTROPHIC_DMAG, deltas, robust_scatter  # noqa: E402

COLS = ("sersic_x", "sersic_y", "sersic_mag", "sersic_r_e", "sersic_n", "sersic_q", "sersic_pa")


def make(path: Path, n: int) -> None:
    from benchmarks.dataset import SimConfig, simulate

    bs = simulate(SimConfig(n_galaxies=n))
    np.savez(path, image=np.stack([c.image for c in bs.cutouts]).astype(np.float32),
             sigma=np.stack([c.sigma for c in bs.cutouts]).astype(np.float16), psf=bs.psf,
             zeropoint=np.array([c.zeropoint for c in bs.cutouts]),
             **{f"truth_{k}": np.asarray(bs.truth[k]) for k in COLS},
             **{f"init_{k}": np.asarray(bs.init[k]) for k in COLS})
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {n} cutouts)")


def tiled(data, n: int, seed: int = 0):
    """n cutouts: the stored ones repeated, each copy with an independent extra noise draw."""
    from galmoss_auto.fitting import Cutout

    rng = np.random.default_rng(seed)
    k = len(data["image"])
    idx = np.arange(n) % k
    cutouts = []
    for i, j in enumerate(idx):
        sigma = data["sigma"][j].astype(np.float64)
        # re-noise: the stored image already holds one realisation; add a second one and widen
        # sigma accordingly, so every copy is a different (still correctly weighted) data set
        image = data["image"][j] + rng.normal(size=sigma.shape) * sigma * (i >= k)
        sig = sigma * (np.sqrt(2.0) if i >= k else 1.0)
        cutouts.append(Cutout(str(i), image, sigma=sig, psf=data["psf"], zeropoint=float(data["zeropoint"][j])))
    init = {k_: data[f"init_{k_}"][idx] for k_ in COLS}
    truth = {k_: data[f"truth_{k_}"][idx] for k_ in COLS}
    return cutouts, init, truth


def accuracy(cat, truth) -> dict:
    """Median and robust scatter of the differences to truth (benchmarks/metrics.py's)."""
    from astropy.table import Table

    d = deltas(cat, Table({"id": cat["id"], **truth}))
    out = {f"{k}_median": float(np.nanmedian(v)) for k, v in d.items()}
    out.update({f"{k}_scatter": robust_scatter(v) for k, v in d.items()})
    out["catastrophic"] = float(np.mean(~(np.abs(d["dmag"]) <= CATASTROPHIC_DMAG)
                                        | ~(np.abs(d["dlogre"]) <= CATASTROPHIC_DLOGRE)))
    out["not_converged"] = int(np.sum(np.asarray(cat["flags"]) & 1))
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make", type=Path, help="simulate the data set into this .npz and stop")
    ap.add_argument("--n", type=int, default=200, help="distinct cutouts to simulate with --make")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n-fit", type=int, default=4096)
    ap.add_argument("--batch-sizes", default="512,2048")
    ap.add_argument("--e2e", type=int, default=0, help="cutouts for the end-to-end FITS run (0: skip)")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.make:
        args.make.parent.mkdir(parents=True, exist_ok=True)
        make(args.make, args.n)
        return 0
    from galmoss_auto.fitting import fit

    device = torch.device(args.device)
    data = dict(np.load(args.data))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    result = {"device": name, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "fits": "single Sérsic + PSF, 128x128, covariance errors, LM", "runs": []}
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    cutouts, init, truth = tiled(data, args.n_fit)
    fit(cutouts[:64], {k: v[:64] for k, v in init.items()}, device=device)  # warm-up
    for bs in batch_sizes:
        sync(device)
        t0 = time.perf_counter()
        cat = fit(cutouts, init, device=device, batch_size=bs)
        sync(device)
        dt = time.perf_counter() - t0
        run = {"n": len(cutouts), "batch_size": bs, "seconds": dt, "galaxies_per_s": len(cutouts) / dt,
               "mean_iterations": float(np.mean(cat["n_iter"])), **accuracy(cat, truth)}
        if device.type == "cuda":
            run["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        print(json.dumps(run))
        result["runs"].append(run)
    if args.e2e:
        result["end_to_end"] = end_to_end(data, args.e2e, device, args.workers, max(batch_sizes))
        print(json.dumps(result["end_to_end"]))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        tag = name.replace(" ", "_").replace("/", "_")
        path = args.out / f"{result['date']}-gpu-throughput-{tag}.json"
        path.write_text(json.dumps(result, indent=2))
        print(f"wrote {path}")
    return 0


def end_to_end(data, n: int, device, workers: int, batch_size: int) -> dict:
    """Write n cutouts as FITS files, then time reading (DataLoader workers) + fitting."""
    from astropy.io import fits

    from galmoss_auto.fitting import fit
    from galmoss_auto.fitting.dataset import CutoutFailure, cutout_loader

    cutouts, init, _ = tiled(data, n, seed=1)
    tmp = Path(tempfile.mkdtemp(prefix="e2e-"))
    fits.writeto(tmp / "psf.fits", data["psf"].astype(np.float32))
    records = []
    for c in cutouts:
        fits.writeto(tmp / f"{c.id}.fits", c.image.astype(np.float32))
        fits.writeto(tmp / f"{c.id}_sigma.fits", c.sigma.astype(np.float32))
        records.append({"id": c.id, "image": str(tmp / f"{c.id}.fits"), "sigma": str(tmp / f"{c.id}_sigma.fits"),
                        "psf": str(tmp / "psf.fits"), "zeropoint": c.zeropoint})
    del cutouts
    sync(device)
    t0 = time.perf_counter()
    n_fit, failures = 0, 0
    for batch in cutout_loader(records, batch_size=batch_size, num_workers=workers):
        good = [c for c in batch if not isinstance(c, CutoutFailure)]
        failures += len(batch) - len(good)
        idx = np.array([int(c.id) for c in good])
        fit(good, {k: v[idx] for k, v in init.items()}, device=device, batch_size=batch_size)
        n_fit += len(good)
    sync(device)
    dt = time.perf_counter() - t0
    return {"n": n, "fitted": n_fit, "failures": failures, "seconds": dt, "galaxies_per_s": n / dt,
            "workers": workers, "batch_size": batch_size}


if __name__ == "__main__":
    raise SystemExit(main())
