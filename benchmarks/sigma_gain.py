"""What the estimated sigma map's photon noise buys, on simulated cutouts with an exact truth.

The same simulated cutouts are run through ``galmoss-auto run`` (sep masks and starts, so only
the noise differs) four ways:

* ``exact_sigma``: the simulator's exact sigma maps (the best any estimate can do);
* ``measured``: image and PSF only, no gain anywhere (the ``GAIN`` keyword stripped): sigma =
  sky RMS plus the photon noise of a gain measured from the pixels (``fitting/gain.py``);
* ``preset_gain``: the same files with ``--survey`` (the preset's effective gain);
* ``sky_only``: as ``measured`` with the measurement switched off (sigma = sky RMS alone, as
  before ``fitting/gain.py``).

Reported per way: the catastrophic fraction (|Δmag| > 0.5 or |Δlog r_e| > 0.3), the bias and
robust scatter of Δmag, Δlog r_e and Δlog n against the truth, the median χ²_ν and where the
gain came from.  Writes ``<results>/<tag>.md`` and ``.json``.

    python -m benchmarks.sigma_gain --work /tmp/sg --n 400 --mag-range 13 16 \\
        --results benchmarks/results --tag 2026-12-07-vm-cpu-sigma-gain-bright
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from benchmarks.metrics import CATASTROPHIC_DLOGRE, CATASTROPHIC_DMAG, robust_scatter

WAYS = ("exact_sigma", "measured", "preset_gain", "sky_only")


def strip_to_bare(sim: Path, out: Path) -> Path:
    """Image (header without GAIN) and PSF files of every simulated cutout, and their manifest."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in Table.read(sim / "manifest.ecsv"):
        with fits.open(sim / str(r["image"]).split("[")[0]) as h:
            header = h[0].header.copy()
            header.remove("GAIN", ignore_missing=True, remove_all=True)
            image = fits.PrimaryHDU(h[0].data.astype(np.float32), header)
            image.writeto(out / f"{r['id']}.fits", overwrite=True)
            fits.PrimaryHDU(h["PSF"].data).writeto(out / f"{r['id']}_psf.fits", overwrite=True)
        rows.append((str(r["id"]), f"{r['id']}.fits", f"{r['id']}_psf.fits"))
    Table(rows=rows, names=["id", "image", "psf"]).write(out / "manifest.ecsv", overwrite=True)
    return out / "manifest.ecsv"


def score(catalog: Table, truth: Table) -> dict:
    t = {str(r["id"]): r for r in truth}
    ids = [str(i) for i in catalog["id"]]
    d = {k: np.array([float(c[f"sersic_{k}"]) for c in catalog]) for k in ("mag", "r_e", "n")}
    dm = d["mag"] - [float(t[i]["sersic_mag"]) for i in ids]
    dr = np.log10(d["r_e"] / [float(t[i]["sersic_r_e"]) for i in ids])
    dn = np.log10(d["n"] / [float(t[i]["sersic_n"]) for i in ids])
    ok = np.isfinite(dm) & np.isfinite(dr) & np.isfinite(dn)
    catastrophic = (np.abs(dm) > CATASTROPHIC_DMAG) | (np.abs(dr) > CATASTROPHIC_DLOGRE) | ~ok
    sources, counts = np.unique(np.asarray(catalog["gain_source"]).astype(str), return_counts=True)
    return {"n": len(ids), "catastrophic": float(np.mean(catastrophic)),
            "dmag_bias": float(np.median(dm[ok])), "dmag_sigma": robust_scatter(dm[ok]),
            "dlogre_bias": float(np.median(dr[ok])), "dlogre_sigma": robust_scatter(dr[ok]),
            "dlogn_sigma": robust_scatter(dn[ok]),
            "chi2_nu_median": float(np.nanmedian(np.asarray(catalog["chi2_nu"]))),
            "gain_sources": {str(s): int(c) for s, c in zip(sources, counts)}}


def run_ways(sim: Path, work: Path, survey: str, band: str) -> dict:
    from galmoss_auto.fitting import gain as gain_module
    from galmoss_auto.pipelines.config import RunConfig
    from galmoss_auto.pipelines.run import run

    truth = Table.read(sim / "truth.ecsv")
    manifest = Table.read(sim / "manifest.ecsv")
    bare = strip_to_bare(sim, work / "bare")
    given = {"zeropoint": float(manifest["zeropoint"][0]), "pixel_scale": float(manifest["pixel_scale"][0])}
    plans = {"exact_sigma": (sim / "manifest.ecsv", {}), "measured": (bare, given),
             "preset_gain": (bare, given | {"survey": survey, "band": band}), "sky_only": (bare, given)}
    results = {}
    measure = gain_module.estimate_gain
    for way in WAYS:
        inp, options = plans[way]
        if way == "sky_only":   # the measurement switched off: what sigma was before it
            gain_module.estimate_gain = lambda *a, **k: None
        try:
            run(RunConfig(input=str(inp), out=str(work / way), workers=0, progress=False, mask="sep",
                          init="sep", **options), stream=io.StringIO())
        finally:
            gain_module.estimate_gain = measure
        results[way] = score(Table.read(work / way / "catalog.fits"), truth)
        r = results[way]
        print(f"{way}: catastrophic {100 * r['catastrophic']:.1f} %, Δmag {r['dmag_bias']:+.4f} ± "
              f"{r['dmag_sigma']:.4f}, χ²_ν {r['chi2_nu_median']:.3f}, gain {r['gain_sources']}", flush=True)
    return results


def report(results: dict, setup: dict, machine: str) -> str:
    L = [f"# Estimated sigma maps' photon noise on simulated cutouts ({setup['survey']} {setup['band']})", "",
         f"Machine: {machine}.  {setup['n']} cutouts of {setup['size']}² px, seed {setup['seed']}, "
         f"magnitudes {setup['mag_range'][0]}–{setup['mag_range'][1]}, "
         + ("with substructure (not pure Sérsics), " if setup["substructure"] else "")
         + "no contaminants; `run` with sep masks and starts.  `benchmarks/sigma_gain.py`.", "",
         "| sigma | catastrophic | Δmag bias | Δmag σ | Δlog r_e σ | Δlog n σ | median χ²_ν | gain from |",
         "|---|---|---|---|---|---|---|---|"]
    for way, r in results.items():
        src = ", ".join(f"{k} {v}" for k, v in r["gain_sources"].items())
        L.append(f"| {way} | {100 * r['catastrophic']:.1f} % | {r['dmag_bias']:+.4f} | {r['dmag_sigma']:.4f} | "
                 f"{r['dlogre_sigma']:.4f} | {r['dlogn_sigma']:.4f} | {r['chi2_nu_median']:.3f} | {src} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--survey", default="sdss")
    ap.add_argument("--band", default="r")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=9912)
    ap.add_argument("--mag-range", type=float, nargs=2, default=(13.0, 16.0))
    ap.add_argument("--substructure", action="store_true",
                    help="galaxies with the simulator's substructure (clumps, arms): not pure Sérsics")
    ap.add_argument("--results", default="benchmarks/results")
    ap.add_argument("--tag", required=True)
    a = ap.parse_args(argv)
    from benchmarks.machine import machine_info, write_results
    from galmoss_auto.data_scripts.simulate import simulate

    work = Path(a.work)
    sim = work / "sim"
    simulate(a.survey, a.band, a.n, seed=a.seed, out=sim, size=a.size, workers=1, fits=True, progress=False,
             contaminants=False, mag_range=tuple(a.mag_range), substructure=a.substructure)
    results = run_ways(sim, work, a.survey, a.band)
    info = machine_info()
    machine = (f"{info.get('cpu', 'CPU')} ({info.get('cpu_cores')} cores, {info.get('torch_threads')} "
               "torch threads), no GPU")
    setup = {"survey": a.survey, "band": a.band, "n": a.n, "size": a.size, "seed": a.seed,
             "mag_range": list(a.mag_range), "substructure": a.substructure}
    record = {"machine": info, "setup": setup, "results": results}
    write_results(a.results, a.tag, record, report(results, setup, machine))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
