"""What the limit on a fitted neighbour's growth does to the target's fit (held-out simulations).

    python -m benchmarks.neighbour_growth --survey sdss hsc legacy lsst --growth none 3 \\
        --tag 2026-12-07-vm-cpu-neighbour-growth

The learned-mask path of :mod:`benchmarks.automask_eval` (same simulations: seeds
``--seed`` + k for the k-th survey, 128², blend probability 0.5; the shipped automask
checkpoint of each survey; sep starts with the modelled neighbours hidden; one Sérsic plus a
flat sky; residual search and centre check, as ``run`` fits), once per ``--growth`` setting of
:func:`galmoss_auto.fitting.neighbours.fit_with_neighbours` (``none``: no limit).  Per setting:
catastrophic fraction (|Δmag| > 0.5 or |Δlog r_e| > 0.3), robust σ of Δmag, Δlog r_e and Δn
against the truth, NOT_CONVERGED count, mean LM iterations, and how many neighbours given by
the masker ended with r_e > 30 px (in a 128-px cutout: a sheet, not a galaxy).

Writes ``<results>/<tag>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import automask_eval as ae
from benchmarks.machine import machine_info, write_results

CHECKPOINTS = {"sdss": "automask-sdss-u-g-r-i-z-slim-v4", "hsc": "automask-hsc-g-r-i-z-y-slim-v4",
               "legacy": "automask-legacy-g-r-z-slim-v4", "lsst": "automask-lsst-u-g-r-i-z-y-slim-v4"}
WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights"
SEEDS = {"sdss": 9201, "legacy": 9202, "hsc": 9203, "lsst": 9204}   # automask_eval's v4 runs


def run_survey(survey: str, n: int, seed: int, growths: list, workdir: Path) -> dict:
    from galmoss_auto.automask.predict import MaskRCNNMasker, cutouts_from_shard
    from galmoss_auto.fitting.neighbours import fit_with_neighbours
    from galmoss_auto.pipelines.run import run_model

    dirty, _, truth, meta = ae._simulate(survey, "r", n, seed, 128, workdir / f"{survey}-r-s{seed}", True, 0.5)
    zp = float(meta["zeropoint"])
    cut = cutouts_from_shard(dirty, zp)
    masker = MaskRCNNMasker(checkpoint=WEIGHTS / f"{CHECKPOINTS[survey]}.safetensors")
    results = masker.mask_batch(cut, "cpu")
    model = run_model(None, "flat")
    masked, init, nbs = ae.learned_path(cut, results, zp, model)
    out = {"survey": survey, "n": len(cut), "seed": seed, "n_neighbours": int(sum(len(r.neighbours) for r in results)),
           "settings": {}}
    for g in growths:
        t = time.perf_counter()
        cat, nb = fit_with_neighbours(masked, init, nbs, model, device="cpu", errors="none", search=True,
                                      centred=True, growth=g)
        d = ae._deltas(cat, truth)
        given = np.asarray(nb["origin"]) == "given"
        out["settings"][str(g)] = {
            "catastrophic": d["catastrophic"], "dmag_scatter": d["dmag_scatter"],
            "dlogre_scatter": d["dlogre_scatter"], "dn_scatter": d["dn_scatter"],
            "not_converged": int(np.sum(np.asarray(cat["flags"]) & 1)),
            "mean_iterations": float(np.mean(cat["n_iter"])),
            "neighbours_re_over_30px": int(np.sum(np.asarray(nb["r_e"], float)[given] > 30)),
            "fit_s": round(time.perf_counter() - t, 1)}
        print(survey, g, out["settings"][str(g)], flush=True)
    return out


def _markdown(record: dict) -> str:
    L = [f"# Neighbour growth limit: {record['tag']}", "",
         f"Machine: {record['machine']['cpu']}, {record['threads']} torch thread(s), CPU.  "
         "`benchmarks/neighbour_growth.py`: the learned-mask path of `automask_eval` (same held-out "
         "simulations, shipped v4 checkpoints), fitted with each growth limit.", "",
         "| survey | growth | catastrophic | Δmag σ | Δlog r_e σ | Δn σ | not converged | mean iterations "
         "| given neighbours with r_e > 30 px |", "|---|---|---|---|---|---|---|---|---|"]
    for s in record["surveys"]:
        for g, r in s["settings"].items():
            L.append(f"| {s['survey']} ({s['n']}, {s['n_neighbours']} neighbours) | {g} | "
                     f"{100 * r['catastrophic']:.1f} % | {r['dmag_scatter']:.4f} | {r['dlogre_scatter']:.4f} | "
                     f"{r['dn_scatter']:.3f} | {r['not_converged']} | {r['mean_iterations']:.2f} | "
                     f"{r['neighbours_re_over_30px']} |")
    return "\n".join(L + [""] + [f"- {n}" for n in record["notes"]]) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--survey", nargs="+", default=["sdss"], choices=sorted(CHECKPOINTS))
    p.add_argument("--growth", nargs="+", default=["none", "3"], help="limits to compare (none: no limit)")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workdir", default="/tmp/galmoss_automask_eval")
    p.add_argument("--results", default=str(ae.RESULTS))
    p.add_argument("--tag", default=time.strftime("%Y-%m-%d") + "-vm-cpu-neighbour-growth")
    p.add_argument("--note", action="append", default=[])
    a = p.parse_args(argv)
    growths = [None if g.lower() == "none" else float(g) for g in a.growth]
    before = torch.get_num_threads()
    torch.set_num_threads(a.threads)
    try:
        record = {"tag": a.tag, "machine": machine_info(), "threads": a.threads, "surveys": [], "notes": a.note}
        for survey in a.survey:
            record["surveys"].append(run_survey(survey, a.n, SEEDS[survey], growths, Path(a.workdir)))
    finally:
        # called in-process (the tests), it must not leave the caller on another thread count:
        # fits with neighbours differ in their last bits between thread counts
        torch.set_num_threads(before)
    results = Path(a.results)
    path = write_results(results, a.tag, record, _markdown(record))
    print(f"wrote {path} and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
