"""galmoss-auto against its peers on the same simulated cutouts: speed and accuracy, one table.

Simulates ``--n`` single-Sérsic cutouts (GalSim, Moffat PSF; see benchmarks/dataset.py), gets
one set of sep initial guesses, fits them with galmoss-auto (all ``--n``) and with each
available peer (the first ``--peer-n``, since the peers are slow), with the same images, sigma,
PSF and starting values.  Times are wall-clock seconds of the fit calls only, after a warm-up
fit that is not counted.  Prints one Markdown table, then writes it as JSON and Markdown to
``--out``/<date>-<host>-<device>[-<tag>].{json,md} with the CPU/GPU, torch version and date.

Accuracy is also given for galmoss-auto on the peers' galaxies (row "[first k]" when
--peer-n < --n), so every scatter is compared on the same galaxies.  The scatter target is
checked strictly and with a paired bootstrap over galaxies (is our scatter larger than the best
peer's by more than chance?); per-galaxy differences go into the JSON for re-analysis.  Speed
ratios (ours / peer galaxies per second) are measured in this run.  Run on an otherwise idle
machine: other jobs distort the ratios.

Usage: python benchmarks/run_benchmark.py [--n 50] [--peer-n 50] [--size 128]
       [--peers all|none|AstroPhot,GalMOSS,PyImfit] [--device cpu|cuda] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.dataset import SimConfig, simulate
from benchmarks.machine import machine_info, slug
from benchmarks.metrics import DELTAS, deltas, paired_scatter_difference, summarise
from benchmarks.peers import registry

OURS = "galmoss-auto"
#: Keyword arguments for each tool's (uncounted) warm-up fit of one galaxy.
WARMUP = {"GalMOSS": {"iterations": 5}}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50, help="galaxies fitted by galmoss-auto (>= 1)")
    ap.add_argument("--peer-n", type=int, default=50,
                    help="galaxies fitted by each peer: the first PEER_N (1 <= PEER_N <= N)")
    ap.add_argument("--size", type=int, default=128, help="cutout side in pixels (>= 16)")
    ap.add_argument("--peers", default="all",
                    help="'all', 'none', or comma-separated peer names")
    ap.add_argument("--device", default="cpu", help="torch device for torch tools (cpu, cuda)")
    ap.add_argument("--errors", default="covariance", choices=("covariance", "bootstrap", "none"),
                    help="galmoss-auto's error estimate (the target is with covariance)")
    ap.add_argument("--batch-size", type=int, default=None, help="galmoss-auto batch size")
    ap.add_argument("--galmoss-errors", default="none", choices=("none", "covariance"),
                    help="GalMOSS's covar_mat errors (slow on a CPU; default off)")
    ap.add_argument("--seed", type=int, default=SimConfig.seed)
    ap.add_argument("--tag", default="", help="suffix for the result files' names (letters, digits, -)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error(f"--n must be >= 1, got {args.n}")
    if not 1 <= args.peer_n:
        ap.error(f"--peer-n must be >= 1, got {args.peer_n}")
    args.peer_n = min(args.peer_n, args.n)
    if not all(ch.isalnum() or ch == "-" for ch in args.tag):
        ap.error(f"--tag may hold letters, digits and '-' only, got {args.tag!r}")
    return args


def peer_list(spec: str) -> list[str]:
    if spec == "none":
        return []
    if spec == "all":
        return [p for p in registry.names() if p != OURS]
    return [registry.canonical(s) for s in spec.split(",") if s.strip()]


def run_tool(name, bench, n, device, kwargs):
    """Warm up on one galaxy, then fit the first n; returns (PeerResult or None, note)."""
    mod = registry.get(name)
    ok, version = mod.available()
    if not ok:
        return None, f"not available: {version}"
    sub = bench.subset(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod.fit(sub.cutouts[:1], sub.init[:1], device=device, **{**kwargs, **WARMUP.get(name, {})})
        res = mod.fit(sub.cutouts, sub.init, device=device, **kwargs)
    return res, ""


def fmt(v, nd=3):
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if v is None or not np.isfinite(v):
        return "nan"
    return f"{v:.{nd}g}" if abs(v) >= 100 else f"{v:.{nd}f}"


def markdown_table(rows: list[dict]) -> str:
    head = ["tool", "N", "gal/s", "ours ÷ tool"]
    for label in DELTAS.values():
        head += [f"{label} med", f"{label} σ"]
    head += ["catastr.", "not conv."]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        s = r["stats"]
        cells = [r["label"], str(s["n"]), fmt(s["galaxies_per_s"], 3),
                 fmt(r.get("ratio"), 3) if r.get("ratio") is not None else "—"]
        for k in DELTAS:
            cells += [fmt(s[f"{k}_median"], 3), fmt(s[f"{k}_scatter"], 3)]
        cells += [fmt(s["catastrophic_fraction"], 2), str(s["not_converged"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_lines(rows: list[dict], device: str, per_galaxy: dict) -> list[str]:
    """The issue's targets, evaluated on this run (CPU: ratios and scatter).

    ``per_galaxy`` maps each row's label to its per-galaxy deltas (benchmarks.metrics.deltas),
    for the paired comparison of scatters on the same galaxies."""
    by = {r["label"]: r for r in rows}
    out = []
    for peer, need in (("AstroPhot", 10.0), ("GalMOSS", 50.0)):
        if peer in by and by[peer].get("ratio") is not None and not device.startswith("cuda"):
            got = by[peer]["ratio"]
            out.append(f"speed vs {peer}: {got:.1f}x (target >= {need:.0f}x): "
                       f"{'MET' if got >= need else 'NOT MET'}")
    same = next((r for r in rows if r["label"] == f"{OURS} [first {r['stats']['n']}]"), by.get(OURS))
    peers = [r for r in rows if not r["label"].startswith(OURS)]
    if same and peers:
        strict, significant, details = [], [], []
        for k, label in DELTAS.items():
            best = min(peers, key=lambda p: p["stats"][f"{k}_scatter"])
            ours_s, best_s = same["stats"][f"{k}_scatter"], best["stats"][f"{k}_scatter"]
            diff, low, high = paired_scatter_difference(per_galaxy[same["label"]][k],
                                                        per_galaxy[best["label"]][k])
            details.append(f"{label}: {ours_s:.4g} vs {best['label']} {best_s:.4g} "
                           f"(difference {diff:+.2g}, 95% CI [{low:+.2g}, {high:+.2g}])")
            if ours_s > best_s:
                strict.append(label)
            if low > 0:
                significant.append(label)
        out.append("scatter no worse than the best peer in every parameter, strictly: "
                   + ("MET" if not strict else "NOT MET in " + ", ".join(strict)))
        out.append("scatter significantly worse (paired bootstrap, 95%) than the best peer in: "
                   + (", ".join(significant) if significant else "none"))
        out.extend("  " + d for d in details)
    if device.startswith("cuda") and OURS in by:
        g = by[OURS]["stats"]["galaxies_per_s"]
        out.append(f"GPU speed: {g:.0f} galaxies/s (target >= 2000): "
                   f"{'MET' if g >= 2000 else 'NOT MET'}")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    info = machine_info(args.device)
    t0 = time.perf_counter()
    bench = simulate(SimConfig(n_galaxies=args.n, size=args.size, seed=args.seed))
    print(f"simulated {args.n} cutouts of {args.size}x{args.size} px in "
          f"{time.perf_counter() - t0:.1f} s ({bench.meta['psf']}, sky {bench.config.sky})",
          flush=True)
    rows, notes, versions, settings, per_galaxy = [], [], {}, {}, {}

    ours_kwargs = {"errors": args.errors, "batch_size": args.batch_size}
    res, note = run_tool(OURS, bench, args.n, args.device, ours_kwargs)
    ours_rate, ours_table = None, None
    if res is None:
        notes.append(f"{OURS}: {note}")
        print(f"{OURS}: {note}", flush=True)
    else:
        ours_rate, ours_table = res.galaxies_per_s, res.table
        rows.append({"label": OURS, "stats": summarise(res.table, bench.truth, res.wall_s)})
        per_galaxy[OURS] = deltas(res.table, bench.truth)
        versions[OURS], settings[OURS] = res.version, res.settings
        print(f"{OURS}: {args.n} galaxies in {res.wall_s:.2f} s", flush=True)

    peers = peer_list(args.peers)
    if peers and ours_table is not None and args.peer_n < args.n:
        # Our accuracy on exactly the peers' galaxies, for a like-for-like scatter comparison.
        k = args.peer_n
        sub_stats = summarise(ours_table[:k], bench.truth[:k], res.wall_s * k / args.n)
        rows.append({"label": f"{OURS} [first {k}]", "stats": sub_stats})
        per_galaxy[f"{OURS} [first {k}]"] = deltas(ours_table[:k], bench.truth)
    for name in peers:
        kwargs = {"errors": args.galmoss_errors} if name == "GalMOSS" else {}
        t1 = time.perf_counter()
        pres, note = run_tool(name, bench, args.peer_n, args.device, kwargs)
        if pres is None:
            notes.append(f"{name}: {note}")
            print(f"{name}: {note}", flush=True)
            continue
        stats = summarise(pres.table, bench.truth, pres.wall_s)
        ratio = ours_rate / stats["galaxies_per_s"] if ours_rate is not None else None
        rows.append({"label": name, "stats": stats, "ratio": ratio})
        per_galaxy[name] = deltas(pres.table, bench.truth)
        versions[name], settings[name] = pres.version, pres.settings
        print(f"{name}: {args.peer_n} galaxies in {pres.wall_s:.2f} s "
              f"(with set-up {time.perf_counter() - t1:.1f} s)", flush=True)

    table = markdown_table(rows)
    targets = target_lines(rows, args.device, per_galaxy)
    header = (f"galmoss-auto benchmark — {info['date']} — {info['host']} — CPU: {info['cpu']} "
              f"({info['cpu_cores']} cores, {info['torch_threads']} torch threads) — GPU: "
              f"{info['gpu'] or 'none'} — device: {args.device} — torch {info['torch']}")
    legend = ("Single-Sérsic + Moffat PSF, {s}x{s} px, same sep initial guesses for all tools; "
              "galmoss-auto errors: {e}. gal/s = galaxies / wall time of the fit call(s) after a "
              "warm-up. σ = 1.4826·MAD. Δlog r_e in dex, ΔPA in deg (q_true ≤ 0.8 only). "
              "catastr. = fraction with |Δmag| > 0.5 or |Δlog r_e| > 0.3 or no fit. "
              "ours ÷ tool = our gal/s over the tool's, this run."
              ).format(s=args.size, e=args.errors)
    print()
    print(header)
    print(table)
    print(legend)
    for line in targets + notes:
        print("- " + line)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / (slug(info) + (f"-{args.tag}" if args.tag else ""))
    payload = {"machine": info, "args": vars(args), "simulation": {
        **{k: getattr(bench.config, k) for k in bench.config.__dataclass_fields__}, **bench.meta},
        "versions": versions, "settings": settings, "rows": rows, "targets": targets,
        "per_galaxy": {k: {d: np.asarray(v).tolist() for d, v in ds.items()} for k, ds in per_galaxy.items()},
        "notes": notes}
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str))
    md = "\n\n".join([f"# {header}", table, legend,
                      "\n".join("- " + s for s in targets + notes) or "",
                      "Tool versions and settings:\n\n" + "\n".join(
                          f"- {k} {versions[k]}: {json.dumps(settings[k], default=str)}"
                          for k in versions)])
    stem.with_suffix(".md").write_text(md + "\n")
    print(f"\nwrote {stem.with_suffix('.json')} and {stem.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
