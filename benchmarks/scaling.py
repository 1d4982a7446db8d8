"""How galmoss-auto's speed and memory scale: galaxies/s against batch size, cutout size
(64^2 ... 512^2), number of Sérsic components (1, 2, 3) and error method (none, covariance,
bootstrap), with peak memory per galaxy; the peers join the cutout-size sweep.  Writes
``--out``/<date>-<host>-<device>-scaling.{json,md,png} (the PNG: galaxies/s against cutout size
for every tool).

Every measurement runs in a fresh worker process so that its peak memory is its own: on CUDA
``torch.cuda.max_memory_allocated`` during the timed fit; on a CPU the peak resident set
(Linux's VmHWM, reset through /proc/self/clear_refs once the data and the tool are loaded)
over the resident set at that moment, i.e. the working memory of the warm-up and timed fits of
one batch (elsewhere, the growth of ``ru_maxrss``, which cannot be reset and so misses memory
below an earlier peak).  Each worker warms up on the same batch before the timed fit.

The k-component fits (k = 2, 3) are of galaxies simulated with k components (a Sérsic, an
exponential disk, a bar; :mod:`benchmarks.dataset`), started from the one-component sep guess
split into k components, so that the model is the right one and "not converged" means what it
says.

Usage: python benchmarks/scaling.py [--device cpu|cuda] [--quick] [--peers all|none|...]
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from astropy.table import Table

OURS = "galmoss-auto"
#: Component names (those of benchmarks.dataset.COMPONENT_NAMES) and relative starting r_e, n
#: and q for k-component models (None: the sep guess's).
COMPONENTS = (("sersic", 0.5, None, None), ("disk", 1.5, 1.0, None), ("bar", 0.75, 0.5, 0.35))


def split_init(init: Table, k: int) -> Table:
    """Starting values for k concentric Sérsic components from a one-component sep guess
    (1 <= k <= 3).  One component: the guess itself.  More: the flux split evenly, r_e x 0.5,
    1.5 and 0.75, n as guessed then 1 and 0.5, the bar's q 0.35."""
    if not 1 <= k <= len(COMPONENTS):
        raise ValueError(f"k must be in [1, {len(COMPONENTS)}], got {k}")
    t = Table({"id": init["id"]})
    dmag = 2.5 * np.log10(k)
    for name, re_scale, n, q in COMPONENTS[:k]:
        for p in ("x", "y", "q", "pa"):
            t[f"{name}_{p}"] = np.asarray(init[f"sersic_{p}"], dtype=np.float64)
        t[f"{name}_mag"] = np.asarray(init["sersic_mag"], dtype=np.float64) + dmag
        t[f"{name}_r_e"] = np.asarray(init["sersic_r_e"], dtype=np.float64) * (
            re_scale if k > 1 else 1.0)
        t[f"{name}_n"] = (np.asarray(init["sersic_n"], dtype=np.float64) if n is None
                          else np.full(len(init), n))
        if q is not None:
            t[f"{name}_q"] = np.full(len(init), q)
    return t


def component_model(k: int):
    """galmoss-auto Model of k Sérsic components named as in :data:`COMPONENTS`."""
    from galmoss_auto.fitting import Model, Sersic

    return Model([Sersic(name) for name, *_ in COMPONENTS[:k]])


# --------------------------------------------------------------------------------------------
# worker: one measurement in its own process
# --------------------------------------------------------------------------------------------

def _worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    with open(spec["data"], "rb") as fh:
        bench = pickle.load(fh)
    import torch

    from benchmarks.peers import registry

    n = spec["n"]
    cut, init = bench.cutouts[:n], bench.init[:n]
    mod = registry.get(spec["tool"])
    kwargs = dict(spec.get("kwargs", {}))
    if spec["tool"] == OURS and spec.get("components", 1) > 1:
        kwargs["model"] = component_model(spec["components"])
        init = split_init(init, spec["components"])
    cuda = spec["device"].startswith("cuda")
    mod.available()  # imports the tool, so its import does not count as fit memory
    rss = _ResidentPeak()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warm = dict(kwargs, **({"iterations": 5} if spec["tool"] == "GalMOSS" else {}))
        wn = min(n, int(kwargs.get("batch_size") or n)) if spec["tool"] == OURS else 1
        mod.fit(cut[:wn], init[:wn], device=spec["device"], **warm)
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        res = mod.fit(cut, init, device=spec["device"], **kwargs)
        if cuda:
            torch.cuda.synchronize()
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        per = peak / min(n, int(kwargs.get("batch_size") or n))
    else:
        peak = rss.growth()
        per = peak / (min(n, int(kwargs.get("batch_size") or n)) if spec["tool"] == OURS else 1)
    conv = np.asarray(res.table["converged"], bool)
    print(json.dumps({"wall_s": res.wall_s, "galaxies_per_s": res.galaxies_per_s,
                      "peak_bytes": int(peak), "peak_bytes_per_galaxy": float(per),
                      "not_converged": int((~conv).sum()), "n": len(res.table)}))


class _ResidentPeak:
    """Peak resident-set growth (bytes) of this process from the moment it is made."""

    def __init__(self):
        self.base = self._status("VmRSS")
        try:  # "5" resets the peak (VmHWM) to the current resident set (Linux >= 4.0)
            Path("/proc/self/clear_refs").write_text("5")
            self.resettable = self.base is not None
        except OSError:
            self.resettable = False
        if not self.resettable:
            self.base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    @staticmethod
    def _status(field):
        """A field of /proc/self/status in bytes, or None where there is none."""
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def growth(self) -> int:
        if self.resettable:
            return max(0, self._status("VmHWM") - self.base)
        unit = 1 if sys.platform == "darwin" else 1024   # ru_maxrss: bytes on macOS, else KiB
        return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.base_maxrss) * unit


def measure(tool, bench_path, n, device, kwargs=None, components=1, timeout=1800) -> dict:
    """Run one measurement in a fresh process; returns its JSON (or an ``error`` entry)."""
    spec = {"tool": tool, "data": str(bench_path), "n": n, "device": device,
            "kwargs": kwargs or {}, "components": components}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(spec, fh)
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_worker", fh.name],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    finally:
        Path(fh.name).unlink(missing_ok=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {proc.returncode}: {tail[0][:300]}"}
    return json.loads(lines[-1])


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------

def _sets(sizes, n, tmp: Path, seed: int, components: int = 1) -> dict[int, Path]:
    from benchmarks.dataset import SimConfig, simulate

    paths = {}
    for s in sizes:
        bench = simulate(SimConfig(n_galaxies=n, size=s, seed=seed, components=components))
        p = tmp / f"bench_{s}_{components}.pkl"
        with open(p, "wb") as fh:
            pickle.dump(bench, fh)
        paths[s] = p
    return paths


def _fmt_row(label, r) -> str:
    if "error" in r:
        return f"| {label} | — | — | — | {r['error']} |"
    return (f"| {label} | {r['n']} | {r['galaxies_per_s']:.3g} | "
            f"{r['peak_bytes_per_galaxy'] / 2**20:.3g} | {r['not_converged']} |")


def plot(size_rows: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for tool, pts in size_rows.items():
        pts = [(s, r["galaxies_per_s"]) for s, r in sorted(pts.items()) if "error" not in r]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, "o-", label=tool, lw=2 if tool == OURS else 1)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("cutout side (pixels)")
    ax.set_ylabel("galaxies / s")
    ax.set_title(title, fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--peers", default="all", help="'all', 'none' or comma-separated names")
    ap.add_argument("--quick", action="store_true", help="fewer galaxies (a smoke run)")
    ap.add_argument("--n", type=int, default=None,
                    help="galaxies per measurement (default 32 on CPU, 1024 on CUDA)")
    ap.add_argument("--peer-n", type=int, default=2, help="galaxies per peer measurement")
    ap.add_argument("--sizes", default="64,128,256,512")
    ap.add_argument("--seed", type=int, default=20240605)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        _worker(args._worker)
        return 0

    from benchmarks.machine import machine_info, slug
    from benchmarks.peers import registry

    cuda = args.device.startswith("cuda")
    n = args.n or (1024 if cuda else 32)
    if args.quick:
        n = min(n, 8)
    sizes = [int(s) for s in args.sizes.split(",")]
    if any(s < 16 for s in sizes):
        ap.error(f"--sizes must all be >= 16 px, got {sizes}")
    peers = ([] if args.peers == "none" else
             [p for p in registry.names() if p != OURS] if args.peers == "all" else
             [registry.canonical(p) for p in args.peers.split(",")])
    info = machine_info(args.device)
    results = {"batch": {}, "size": {OURS: {}}, "components": {}, "errors": {}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        # Big cutouts: fewer galaxies, so the sweep stays within minutes on a CPU.
        size_n = {s: max(2, min(n, n * 128 * 128 // (s * s))) if not cuda else n for s in sizes}
        data = _sets(sorted(set(sizes) | {128}), max([n] + list(size_n.values())), Path(tmp),
                     args.seed)
        print(f"simulated in {time.perf_counter() - t0:.0f} s", flush=True)
        for b in sorted({1, 4, 16, 64, 256, 1024, n} if cuda else {1, 4, 8, n}):
            if b <= n:
                r = measure(OURS, data[128], n, args.device, {"batch_size": b})
                results["batch"][b] = r
                print("batch", b, r, flush=True)
        for s in sizes:
            r = measure(OURS, data[s], size_n[s], args.device)
            results["size"][OURS][s] = r
            print("size", s, OURS, r, flush=True)
            for p in peers:
                pdev = args.device if p != "PyImfit" else "cpu"
                pr = measure(p, data[s], min(args.peer_n, size_n[s]), pdev)
                results["size"].setdefault(p, {})[s] = pr
                print("size", s, p, pr, flush=True)
        for k in (1, 2, 3):
            kdata = data[128] if k == 1 else _sets([128], n, Path(tmp), args.seed, k)[128]
            r = measure(OURS, kdata, n, args.device, components=k)
            results["components"][k] = r
            print("components", k, r, flush=True)
        for e in ("none", "covariance", "bootstrap"):
            r = measure(OURS, data[128], n, args.device, {"errors": e})
            results["errors"][e] = r
            print("errors", e, r, flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / (slug(info) + "-scaling")
    title = (f"{info['cpu']} ({info['cpu_cores']} cores); GPU {info['gpu'] or 'none'}; "
             f"device {args.device}; torch {info['torch']}; {info['date'][:10]}")
    plot(results["size"], stem.with_suffix(".png"), title)
    head = "| setting | N | gal/s | peak MiB / galaxy | not conv. |\n|---|---|---|---|---|"
    md = [f"# galmoss-auto scaling — {title}", "",
          "Single-Sérsic + Moffat PSF cutouts; galmoss-auto with covariance errors unless stated. "
          "Peak memory: CUDA max allocated; CPU peak resident set over its level before the "
          "fits (warm-up and timed fit of one batch); per galaxy of a batch (peers: per galaxy "
          "fitted at a time).", "", "## Batch size (128² px)", head]
    md += [_fmt_row(f"batch {b}", r) for b, r in results["batch"].items()]
    md += ["", "## Cutout size", head]
    md += [_fmt_row(f"{tool} {s}²", r) for tool, d in results["size"].items() for s, r in d.items()]
    md += ["", "## Sérsic components (128² px; galaxies simulated with as many components)", head]
    md += [_fmt_row(f"{k} component(s)", r) for k, r in results["components"].items()]
    md += ["", "## Error method (128² px)", head]
    md += [_fmt_row(e, r) for e, r in results["errors"].items()]
    md += ["", f"![galaxies/s against cutout size]({stem.with_suffix('.png').name})"]
    stem.with_suffix(".md").write_text("\n".join(md) + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"machine": info, "args": vars(args),
                                                     "results": results}, indent=2, default=str))
    print("\n".join(md))
    print(f"\nwrote {stem}.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
