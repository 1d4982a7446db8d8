"""initnet evaluation: learned starts against sep starts on held-out simulations.

Reads the zoo checkpoints (``--zoo``) and the held-out simulation folders (``--sims``:
``<survey>_test`` single Sérsic, ``sdss_test_bd`` bulge + disk; seeds never used in training)
and writes ``<out>.json`` and ``<out>.md``:

1. starts vs truth per survey (robust sigma, bias, per S/N bin), initnet against sep;
2. LM fits from initnet and from sep starts (single Sérsic; bulge + disk with the rule of
   galmoss_auto.initnet.bulge_disk): iterations, catastrophic fraction, final accuracy;
3. the loss ablation (param only / + chi2 / chi2 only), from short training runs made by
   benchmarks/initnet_train_zoo.py --tag (their evaluation.json files);
4. domain shift: each checkpoint applied to every other survey's test set;
5. ms per cutout on this machine's CPU (compact and resnet18 architectures).

    python benchmarks/initnet_eval.py --zoo /work/zoo_initnet --sims /work/sims \
        --runs /work/initnet_runs --out benchmarks/results/2026-12-01-vm-cpu-initnet
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from galmoss_auto.fitting import Exponential, Model, Sersic, fit, default_model
from galmoss_auto.fitting.cutout import Cutout
from galmoss_auto.fitting.flags import Flag
from galmoss_auto.initnet.base import PARAMS
from galmoss_auto.initnet.bulge_disk import multi_component_start
from galmoss_auto.initnet.evaluate import (SNR_BINS, load_sim, robust_sigma, sep_starts, start_errors,
                                           start_metrics)
from galmoss_auto.initnet.predict import InitNetInitializer

SURVEYS = ("sdss", "legacy", "hsc", "lsst")


def zoo_checkpoint(zoo: Path, survey: str):
    reg = json.loads((zoo / "registry.json").read_text())
    for e in reg["entries"]:
        if e["survey"] == survey and e["stage"] == "initnet":
            return zoo / e["file"], e
    return None, None


def fit_stats(cutouts, truth, starts, model=None, comps=("sersic",), snr=None) -> dict:
    """LM from ``starts`` (init columns): iterations, catastrophic fraction, final accuracy;
    with ``snr`` (B,) also the mean iterations at S/N 20-500."""
    t0 = time.perf_counter()
    cat = fit(cutouts, starts, model or default_model(), device="cpu", errors="none")
    secs = time.perf_counter() - t0
    n_iter = np.asarray(cat["n_iter"], float)
    if comps == ("sersic",):
        final = {p: np.asarray(cat[f"sersic_{p}"], float) for p in PARAMS}
        err = start_errors(final, truth)
        bad = (np.abs(err["mag"]) > 0.5) | (np.abs(err["log_re"]) > 0.2) | ~np.isfinite(err["mag"])
        acc = {f"final_sigma_{p}": robust_sigma(err[p]) for p in ("mag", "log_re", "n")}
    else:
        flux = sum(10 ** (-0.4 * np.asarray(cat[f"{c}_mag"], float)) for c in comps)
        tot = -2.5 * np.log10(flux)
        dmag = tot - truth["total_mag"]
        bt = 10 ** (-0.4 * np.asarray(cat[f"{comps[0]}_mag"], float)) / flux
        dbt = bt - truth["bt"]
        bad = (np.abs(dmag) > 0.5) | (np.abs(dbt) > 0.3) | ~np.isfinite(dmag)
        acc = {"final_sigma_total_mag": robust_sigma(dmag), "final_sigma_bt": robust_sigma(dbt)}
    conv = (np.asarray(cat["flags"]) & int(Flag.NOT_CONVERGED)) == 0
    if snr is not None:
        mid = (np.asarray(snr) >= 20) & (np.asarray(snr) < 500)
        acc["mean_iter_snr20-500"] = float(n_iter[mid].mean()) if mid.any() else float("nan")
    return {"n": len(cutouts), "mean_iter": float(n_iter.mean()), "median_iter": float(np.median(n_iter)),
            "catastrophic_fraction": float(bad.mean()), "seconds": round(secs, 2),
            "converged_fraction": float(conv.mean()), **acc}


def load_bd(folder, limit):
    """Bulge + disk cutouts and truth (total_mag, bt, and ``components``: the true parameters
    as start columns of ``Model([Sersic("bulge"), Exponential("disk")])``) from a simulation
    folder."""
    from galmoss_auto.initnet.data import _folder_meta, _grow
    from galmoss_auto.data_scripts.shards import ShardDataset
    meta = _folder_meta(Path(folder))
    cutouts, tm, bt, comp = [], [], [], []
    for it in ShardDataset(folder, keys=("image", "sigma", "psf", "segmentation")):
        if len(cutouts) >= limit:
            break
        mask = _grow(it["segmentation"].numpy() >= 2)
        cutouts.append(Cutout(id=it["id"], image=it["image"].numpy().astype(float), sigma=it["sigma"].numpy().astype(float),
                              psf=it["psf"].numpy().astype(float), mask=mask, zeropoint=meta["zeropoint"],
                              pixel_scale=meta["pixel_scale"]))
        tm.append(it["truth"]["total_mag"])
        bt.append(it["truth"]["bt"])
        comp.append(it["truth"])
    keys = [f"bulge_{p}" for p in ("x", "y", "mag", "r_e", "n", "q", "pa")] + \
        [f"disk_{p}" for p in ("x", "y", "mag", "q", "pa")]
    components = {k: np.array([t[k] for t in comp], float) for k in keys}
    # the exponential's scale length from the simulator's half-light radius (r_e = 1.6783 r_s)
    components["disk_r_s"] = np.array([t["disk_r_e"] for t in comp], float) / 1.6783
    return cutouts, {"total_mag": np.array(tm), "bt": np.array(bt), "components": components}


def cols(values: dict, prefix="sersic") -> dict:
    return {f"{prefix}_{p}": np.asarray(values[p]) for p in PARAMS}


def speed(init, cutouts, threads) -> float:
    torch.set_num_threads(threads)
    init.predict(cutouts[:16], "cpu")
    t0 = time.perf_counter()
    init.predict(cutouts, "cpu")
    return 1e3 * (time.perf_counter() - t0) / len(cutouts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", default="/work/zoo_initnet")
    ap.add_argument("--sims", default="/work/sims")
    ap.add_argument("--runs", default="/work/initnet_runs")
    ap.add_argument("--out", default="benchmarks/results/2026-12-01-vm-cpu-initnet")
    ap.add_argument("--n-fit", type=int, default=300)
    ap.add_argument("--n-bd", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], help="sections to skip: fits bd shift speed")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    zoo, sims = Path(a.zoo), Path(a.sims)
    res = {"machine": "2-core shared CPU VM (no GPU), torch threads=%d" % a.threads, "date": time.strftime("%Y-%m-%d"),
           "starts": {}, "fits": {},
           "ablation": {}, "domain_shift": {}, "speed": {}, "checkpoints": {}}
    inits, data = {}, {}
    for s in SURVEYS:
        path, entry = zoo_checkpoint(zoo, s)
        if path is None:
            continue
        inits[s] = InitNetInitializer(path, sha256=entry["sha256"])
        res["checkpoints"][s] = {"name": entry["name"], "file": str(path), "sha256": entry["sha256"],
                                 "size": entry["size"], "training": entry.get("training", {})}
        data[s] = load_sim(sims / f"{s}_test")
    # 1. starts
    seps = {}
    for s, init in inits.items():
        cutouts, truth = data[s]
        v, _, ok, snr = init.predict(cutouts, "cpu")
        sv, _ = sep_starts(cutouts)
        seps[s] = sv
        used = {p: np.where(ok, v[p], sv[p]) for p in PARAMS}
        res["starts"][s] = {"n": len(cutouts), "fallback_fraction": float(1 - ok.mean()),
                            **start_metrics(used, truth, snr, "initnet"), **start_metrics(sv, truth, snr, "sep")}
        data[s] = (cutouts, truth, used, snr)
        print("starts", s, {k: round(res["starts"][s][k], 4) for k in
                            ("initnet_sigma_mag", "sep_sigma_mag", "initnet_sigma_log_re", "sep_sigma_log_re",
                             "initnet_sigma_n", "sep_sigma_n")}, flush=True)
    # 2. fits
    if "fits" not in a.skip and "sdss" in inits:
        cutouts, truth, used, snr = data["sdss"]
        k = min(a.n_fit, len(cutouts))
        sub = {p: v[:k] for p, v in truth.items()}
        res["fits"]["sersic_initnet"] = fit_stats(cutouts[:k], sub, cols({p: used[p][:k] for p in PARAMS}), snr=snr[:k])
        res["fits"]["sersic_sep"] = fit_stats(cutouts[:k], sub, cols({p: seps["sdss"][p][:k] for p in PARAMS}), snr=snr[:k])
        # the floor: the same fits started at the true parameters, which are not the noisy
        # data's χ² minimum, so even a perfect start needs a few iterations
        res["fits"]["sersic_truth"] = fit_stats(cutouts[:k], sub, cols(sub), snr=snr[:k])
        print("fits", res["fits"], flush=True)
    if "bd" not in a.skip and "sdss" in inits and (sims / "sdss_test_bd").is_dir():
        cutouts, truth = load_bd(sims / "sdss_test_bd", a.n_bd)
        model = Model([Sersic("bulge"), Exponential("disk")])
        v, _, ok, _ = inits["sdss"].predict(cutouts, "cpu")
        sv, _ = sep_starts(cutouts)
        used = {p: np.where(ok, v[p], sv[p]) for p in PARAMS}
        res["fits"]["bulge_disk_initnet"] = fit_stats(cutouts, truth, multi_component_start(model, used), model,
                                                      ("bulge", "disk"))
        res["fits"]["bulge_disk_sep"] = fit_stats(cutouts, truth, multi_component_start(model, sv), model,
                                                  ("bulge", "disk"))
        res["fits"]["bulge_disk_truth"] = fit_stats(cutouts, truth, truth["components"], model, ("bulge", "disk"))
        # no start at all: the fitter's generic guess (cutout centre, total flux, n = 2.5)
        res["fits"]["bulge_disk_generic"] = fit_stats(cutouts, truth, {}, model, ("bulge", "disk"))
        print("bd", res["fits"], flush=True)
    # 3. ablation
    runs = Path(a.runs)
    for tag in ("abl-param", "abl-both", "abl-chi2"):
        f = runs / f"sdss-{tag}" / "evaluation.json"
        if f.is_file():
            res["ablation"][tag] = json.loads(f.read_text())
    # 4. domain shift
    if "shift" not in a.skip:
        for src, init in inits.items():
            for dst in inits:
                cutouts, truth, _, snr = data[dst]
                v, _, ok, _ = init.predict(cutouts, "cpu")
                sv = seps[dst]
                used = {p: np.where(ok, v[p], sv[p]) for p in PARAMS}
                m = start_metrics(used, truth, snr, "initnet")
                res["domain_shift"][f"{src}->{dst}"] = {k: m[f"initnet_sigma_{k}"] for k in ("mag", "log_re", "n")} | {
                    "fallback_fraction": float(1 - ok.mean())}
    # 5. speed
    if "speed" not in a.skip and "sdss" in inits:
        cutouts = (data["sdss"][0] * 2)[:1024]
        for th in sorted({1, a.threads}):
            res["speed"][f"compact_ms_per_cutout_threads{th}"] = speed(inits["sdss"], cutouts, th)
        from galmoss_auto.initnet.lightning import build_module
        r18 = InitNetInitializer.from_module(build_module(arch="resnet18"))
        res["speed"][f"resnet18_ms_per_cutout_threads{a.threads}"] = speed(r18, cutouts[:512], a.threads)
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=float))
    out.with_suffix(".md").write_text(markdown(res))
    print("wrote", out.with_suffix(".md"))
    return 0


def _f(v, nd=3):
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{nd}f}"


def markdown(res) -> str:
    L = [f"# initnet evaluation ({res.get('date', time.strftime('%Y-%m-%d'))})", "", f"Machine: {res['machine']}.", "",
         "Held-out simulated cutouts (64 px, single Sérsic + contaminants masked by their footprints; "
         "seeds never used in training).  sigma = robust (1.4826 MAD); n as fractional error.", "",
         "## Starts vs truth", "",
         "| survey | N | fallback | σ mag initnet / sep | σ log r_e (dex) | σ n (frac) | bias mag | bias log r_e | bias n |",
         "|---|---|---|---|---|---|---|---|---|"]
    for s, m in res["starts"].items():
        L.append(f"| {s} | {m['n']} | {_f(m['fallback_fraction'])} | {_f(m['initnet_sigma_mag'])} / {_f(m['sep_sigma_mag'])} "
                 f"| {_f(m['initnet_sigma_log_re'])} / {_f(m['sep_sigma_log_re'])} | {_f(m['initnet_sigma_n'])} / {_f(m['sep_sigma_n'])} "
                 f"| {_f(m['initnet_bias_mag'])} / {_f(m['sep_bias_mag'])} | {_f(m['initnet_bias_log_re'])} / {_f(m['sep_bias_log_re'])} "
                 f"| {_f(m['initnet_bias_n'])} / {_f(m['sep_bias_n'])} |")
    L += ["", "### Per S/N bin (initnet / sep robust σ)", ""]
    for s, m in res["starts"].items():
        L += [f"**{s}**", "", "| S/N | N | mag | log r_e | n |", "|---|---|---|---|---|"]
        for lo, hi in SNR_BINS:
            t = f"_snr{lo:g}-{hi:g}"
            L.append(f"| {lo:g}–{hi:g} | {m.get('count' + t, 0)} | {_f(m['initnet_sigma_mag' + t])} / {_f(m['sep_sigma_mag' + t])} "
                     f"| {_f(m['initnet_sigma_log_re' + t])} / {_f(m['sep_sigma_log_re' + t])} "
                     f"| {_f(m['initnet_sigma_n' + t])} / {_f(m['sep_sigma_n' + t])} |")
        L.append("")
    if res["fits"]:
        L += ["## LM fits from the starts (sdss test set)", "",
              "| model / start | N | mean iter | median iter | catastrophic | converged | final accuracy | s |", "|---|---|---|---|---|---|---|---|"]
        for k, m in res["fits"].items():
            acc = ", ".join(f"{a[len('final_sigma_'):]} {_f(v)}" for a, v in m.items() if a.startswith("final_sigma_"))
            mid = f" ({_f(m['mean_iter_snr20-500'], 2)} at S/N 20–500)" if "mean_iter_snr20-500" in m else ""
            L.append(f"| {k} | {m['n']} | {_f(m['mean_iter'], 2)}{mid} | {_f(m['median_iter'], 1)} | {_f(m['catastrophic_fraction'])} "
                     f"| {_f(m['converged_fraction'])} | {acc} | {m['seconds']} |")
        L += ["", "`*_truth`: started at the true parameters (the floor any start can reach).  "
              "Catastrophic: single Sérsic |Δmag| > 0.5 or |Δlog r_e| > 0.2; bulge+disk |Δ total mag| > 0.5 "
              "or |ΔB/T| > 0.3.  Bulge+disk starts from the single-Sérsic start by the rule in "
              "galmoss_auto.initnet.bulge_disk.", ""]
    if res["ablation"]:
        L += ["## Loss ablation (sdss, short runs of equal budget)", "",
              "| run | σ mag | σ log r_e | σ n | σ mag S/N 20–50 | σ mag S/N 100–500 | train s |", "|---|---|---|---|---|---|---|"]
        for k, m in res["ablation"].items():
            L.append(f"| {k} | {_f(m['initnet_sigma_mag'])} | {_f(m['initnet_sigma_log_re'])} | {_f(m['initnet_sigma_n'])} "
                     f"| {_f(m.get('initnet_sigma_mag_snr20-50'))} | {_f(m.get('initnet_sigma_mag_snr100-500'))} | {m.get('train_seconds')} |")
        L.append("")
    if res["domain_shift"]:
        L += ["## Domain shift (checkpoint -> test set): σ mag / σ log r_e / σ n", "", "| pair | mag | log r_e | n | fallback |",
              "|---|---|---|---|---|"]
        for k, m in res["domain_shift"].items():
            L.append(f"| {k} | {_f(m['mag'])} | {_f(m['log_re'])} | {_f(m['n'])} | {_f(m['fallback_fraction'])} |")
        L.append("")
    if res["speed"]:
        L += ["## Speed (CPU, input preparation + network, batches of 512)", ""]
        for k, v in res["speed"].items():
            L.append(f"- {k}: {v:.2f} ms ({1e3 / v:.0f} cutouts/s)")
        L.append("")
    if res["checkpoints"]:
        L += ["## Checkpoints", ""]
        for s, c in res["checkpoints"].items():
            L.append(f"- {s}: {c['name']} ({c['size']} bytes) sha256 {c['sha256']}")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
