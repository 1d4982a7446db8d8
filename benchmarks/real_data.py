"""Real stamps through ``galmoss-auto run``, as a user would run them, against other tools' fits.

Every set of ``../shared/data`` that holds real galaxy images (see each PROVENANCE.md) is run
with the defaults (``--mask auto --init auto --sky flat``), given only what a user would give:
the image, its PSF, and the zero-point, pixel scale, survey or gain its provenance states.
Nothing is given that the pipeline should find itself (sigma maps, masks, starts), but for
one set that measures what the noise estimate costs.  Where a reference fit exists it is
compared with:

* ``gama_kids``, ``gama_sdss``: ProFit's 10 GAMA galaxies in KiDS r (0.2"/px) and SDSS r
  (0.339"/px), against the single-Sérsic fits of Lange et al. (2015) behind ProFit's
  ExampleInit.tab (mag = mag1 - 2.5 log10 2; r_e = re2 in KiDS pixels, x 0.2 / 0.339 for SDSS);
* ``gama_kids_sigma``: the same KiDS stamps with their own sigma maps (``G*sigma.fits``, as
  Lange et al. fitted them) instead of the pipeline's estimate from the image;
* ``hsc``: pysersic's three HSC galaxies; gal2 against pysersic's MAP (mag 18.063 at zp 27,
  r_e 6.257 px, n 3.642);
* ``decals``: the DECaLS DR9 r stamp, its own invvar and PSF (no reference fit);
* ``ic3478``: Imfit's IC 3478 (SDSS r, 256², its mask and Moffat PSF, gain 4.725), against
  Imfit's fit 5 (r_e 59.52 px, n 2.4805; sky fixed at 130.14, where ours fits a flat sky);
* ``ngc5419``: HST WFPC2 (zero-point and gain from its header; no reference fit).

``--kids-gains`` adds ``gama_kids`` runs with a fixed gain in the manifest (what a gain off by
a factor costs).  Writes ``<results>/<tag>.md`` and ``.json``: per galaxy the fit, flags,
stages, the sigma map's gain and the differences from the reference; per set the clean
fraction, median |Δmag| and |Δlog r_e| and galaxies per second.

    python -m benchmarks.real_data --shared ../shared/data --work /tmp/real \
        --results benchmarks/results --tag 2026-12-07-vm-cpu-real-data
"""

from __future__ import annotations

import argparse
import io
import math
import time
from pathlib import Path

import numpy as np
from astropy.table import Table

from galmoss_auto.fitting.flags import Flag, is_clean_fit

GAMA = ["G265911", "G265940", "G266033", "G266035", "G266662", "G267199", "G267489", "G267525",
        "G278109", "G279148"]


def _lange(shared: Path, scale: float) -> dict:
    """{id: (mag, r_e px)} of Lange et al.'s single-Sérsic fits (ExampleInit.tab)."""
    tab = Table.read(shared / "profit_gama_kids_sdss" / "ExampleInit.tab", format="ascii")
    return {f"G{r['CATAID']}": (float(r["sersic.mag1"]) - 2.5 * math.log10(2.0), float(r["sersic.re2"]) * scale)
            for r in tab}


def sets(shared: Path) -> list[dict]:
    """The runs: name, manifest rows, run options, references {id: (mag, r_e[, n])}."""
    g = shared / "profit_gama_kids_sdss"
    hsc = shared / "pysersic_hsc_decals" / "hsc_examp_gals" / "fits_converted"
    dec = shared / "pysersic_hsc_decals" / "decals_dr9_59.1067_-30.4848"
    ic = shared / "imfit_ic3478"
    n5419 = shared / "imfit_ngc5419_hst"
    return [
        {"name": "gama_kids", "rows": [{"id": i, "image": str(g / "KiDS" / f"{i}fitim.fits"),
                                        "psf": str(g / "KiDS" / f"{i}psfim.fits")} for i in GAMA],
         "options": {"zeropoint": 0.0, "pixel_scale": 0.2}, "ref": _lange(shared, 1.0),
         "ref_name": "Lange et al. 2015 (GALFIT, SIGMA)"},
        {"name": "gama_kids_sigma", "rows": [{"id": i, "image": str(g / "KiDS" / f"{i}fitim.fits"),
                                              "sigma": str(g / "KiDS" / f"{i}sigma.fits"),
                                              "psf": str(g / "KiDS" / f"{i}psfim.fits")} for i in GAMA],
         "options": {"zeropoint": 0.0, "pixel_scale": 0.2}, "ref": _lange(shared, 1.0),
         "ref_name": "Lange et al. 2015 (GALFIT, SIGMA)"},
        {"name": "gama_sdss", "rows": [{"id": i, "image": str(g / "SDSS" / f"{i}fitim.fits"),
                                        "psf": str(g / "SDSS" / f"{i}psfim.fits")} for i in GAMA],
         "options": {"zeropoint": 0.0, "pixel_scale": 0.339, "survey": "sdss", "band": "r"},
         "ref": _lange(shared, 0.2 / 0.339), "ref_name": "Lange et al. 2015 (KiDS-based r_e, rescaled)"},
        {"name": "hsc", "rows": [{"id": f"gal{k}", "image": str(hsc / f"gal{k}_im.fits"),
                                  "psf": str(hsc / f"gal{k}_psf.fits")} for k in (1, 2, 3)],
         "options": {"zeropoint": 27.0, "pixel_scale": 0.168, "survey": "hsc", "band": "i"},
         "ref": {"gal2": (27.0 - 2.5 * math.log10(3756.919), 6.25733, 3.64185)},
         "ref_name": "pysersic MAP"},
        {"name": "decals", "rows": [{"id": "decals_r", "image": str(dec / "cutout_59.1067_-30.4848.fits[3]"),
                                     "psf": str(dec / "copsf_59.1067_-30.4848.fits")}],
         "options": {"survey": "legacy", "band": "r"}, "ref": {}, "ref_name": ""},
        {"name": "ic3478", "rows": [{"id": "ic3478", "image": str(ic / "ic3478rss_256.fits"),
                                     "psf": str(ic / "psf_moffat_51.fits"),
                                     "mask": str(ic / "ic3478rss_256_mask.fits"), "gain": 4.725}],
         "options": {"zeropoint": 25.0}, "ref": {"ic3478": (math.nan, 59.5241, 2.48051)},
         "ref_name": "Imfit fit 5 (sky fixed)"},
        {"name": "ngc5419", "rows": [{"id": "ngc5419", "image": str(n5419 / "n5419f555w_pc_derot_cutout.fits"),
                                      "psf": str(n5419 / "n5419_sin100_psf_pc2scale.fits")}],
         "options": {}, "ref": {}, "ref_name": ""},
    ]


def run_set(spec: dict, work: Path) -> dict:
    """Run one set; returns its rows (fit, reference, differences) and summary."""
    from galmoss_auto.pipelines.config import RunConfig
    from galmoss_auto.pipelines.run import run

    work.mkdir(parents=True, exist_ok=True)
    rows = spec["rows"]
    order = ["id", "image", "sigma", "psf", "mask", "gain"]
    cols = sorted({k for r in rows for k in r}, key=order.index)
    Table({c: [r.get(c) for r in rows] for c in cols}).write(work / "manifest.ecsv", overwrite=True)
    out = work / "out"
    t0 = time.perf_counter()
    run(RunConfig(input=str(work / "manifest.ecsv"), out=str(out), workers=0, progress=False,
                  **spec["options"]), stream=io.StringIO())
    seconds = time.perf_counter() - t0
    cat = Table.read(out / "catalog.fits", mask_invalid=False)
    def col(r, name):
        return str(r[name]) if name in cat.colnames else ""   # rows of unreadable cutouts lack them

    result = []
    for r in cat:
        row = {"id": str(r["id"]), "mag": float(r["sersic_mag"]), "r_e": float(r["sersic_r_e"]),
               "n": float(r["sersic_n"]), "q": float(r["sersic_q"]), "chi2_nu": float(r["chi2_nu"]),
               "n_iter": int(r["n_iter"]), "flags": int(r["flags"]),
               "flag_names": [f.name for f in Flag if int(r["flags"]) & int(f)],
               "clean": bool(is_clean_fit(int(r["flags"]))), "mask_method": col(r, "mask_method"),
               "init_method": col(r, "init_method"), "sigma_source": col(r, "sigma_source"),
               "zeropoint_source": col(r, "zeropoint_source"), "gain_source": col(r, "gain_source"),
               "sigma_gain": float(r["sigma_gain"]) if "sigma_gain" in cat.colnames else math.nan,
               "message": col(r, "message")}
        ref = spec["ref"].get(row["id"])
        if ref is not None:
            row["ref_mag"], row["ref_r_e"] = ref[0], ref[1]
            row["dmag"] = row["mag"] - ref[0] if math.isfinite(ref[0]) else math.nan
            row["dlog_re"] = math.log10(row["r_e"] / ref[1])
            if len(ref) > 2:
                row["ref_n"], row["dn"] = ref[2], row["n"] - ref[2]
        result.append(row)
    dm = np.array([r["dmag"] for r in result if math.isfinite(r.get("dmag", math.nan))])
    dr = np.array([r["dlog_re"] for r in result if "dlog_re" in r])
    summary = {"n": len(result), "clean": sum(r["clean"] for r in result), "seconds": seconds,
               "galaxies_per_s": len(result) / seconds,
               "median_abs_dmag": float(np.median(np.abs(dm))) if dm.size else math.nan,
               "median_abs_dlog_re": float(np.median(np.abs(dr))) if dr.size else math.nan,
               "n_ref": int(max(dm.size, dr.size)), "reference": spec["ref_name"],
               "options": spec["options"]}
    return {"rows": result, "summary": summary}


def _f(v, fmt=".3f"):
    return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def _given(res: dict) -> str:
    """What a set was given: its run options, and sigma maps or a gain where its rows had them."""
    rows = res["rows"]
    given = [f"{k} {v}" for k, v in res["summary"]["options"].items()]
    if any(r.get("sigma_source") not in ("", "estimated", "none") for r in rows):
        given.append("sigma maps")
    if any(r.get("gain_source") == "manifest" for r in rows):
        given.append(f"gain {rows[0]['sigma_gain']:.3g}")
    return ", ".join(given) or "nothing"


def report(results: dict, machine: str) -> str:
    L = [f"# Real stamps through `galmoss-auto run` ({time.strftime('%Y-%m-%d')})", "",
         f"Machine: {machine}.  Defaults: `--mask auto --init auto --sky flat`; given per set only "
         "what its provenance states (below).  `benchmarks/real_data.py`.", "",
         "| set | given | galaxies | clean | median abs Δmag | median abs Δlog r_e | reference | galaxies/s |",
         "|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        s = res["summary"]
        given = _given(res)
        L.append(f"| {name} | {given} | {s['n']} | {s['clean']} | {_f(s['median_abs_dmag'])} | "
                 f"{_f(s['median_abs_dlog_re'])} | {s['reference'] or '-'} | {s['galaxies_per_s']:.2f} |")
    L += ["", "Per galaxy (Δ = ours - reference; flags beyond the informational ones make a row not clean):", "",
          "| set | id | mag | r_e (px) | n | χ²_ν | iter | Δmag | Δlog r_e | Δn | mask / init "
          "| σ map gain (source) | flags |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, res in results.items():
        for r in res["rows"]:
            L.append(f"| {name} | {r['id']} | {_f(r['mag'])} | {_f(r['r_e'], '.2f')} | {_f(r['n'], '.2f')} | "
                     f"{_f(r['chi2_nu'], '.2f')} | {r['n_iter']} | {_f(r.get('dmag'))} | {_f(r.get('dlog_re'))} | "
                     f"{_f(r.get('dn'), '.2f')} | {r['mask_method']} / {r['init_method']} | "
                     f"{_f(r.get('sigma_gain'), '.3g') or '-'} ({r.get('gain_source') or '-'}) | "
                     f"{' '.join(r['flag_names']) or '0'} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default="../shared/data", help="the shared data folder")
    ap.add_argument("--work", required=True, help="scratch folder for the runs")
    ap.add_argument("--results", default="benchmarks/results")
    ap.add_argument("--tag", required=True, help="results file name (without extension)")
    ap.add_argument("--sets", nargs="*", default=None, help="only these sets")
    ap.add_argument("--kids-gains", nargs="*", type=float, default=(),
                    help="also run gama_kids with each of these gains (e-/image unit) in its manifest: "
                         "how much the sigma map's photon noise matters (the stamps' own maps: ~1.8e13)")
    a = ap.parse_args(argv)
    from benchmarks.machine import machine_info, write_results
    shared = Path(a.shared).resolve()   # the manifests' paths are relative to their own folder
    results = {}
    specs = sets(shared)
    kids = next(sp for sp in specs if sp["name"] == "gama_kids")
    specs += [dict(kids, name=f"gama_kids_gain_{g:.3g}", rows=[dict(r, gain=g) for r in kids["rows"]])
              for g in a.kids_gains]
    for spec in specs:
        if a.sets and spec["name"] not in a.sets and not spec["name"].startswith("gama_kids_gain_"):
            continue
        results[spec["name"]] = run_set(spec, Path(a.work) / spec["name"])
        s = results[spec["name"]]["summary"]
        print(f"{spec['name']}: {s['clean']}/{s['n']} clean, median |dmag| {_f(s['median_abs_dmag'])}, "
              f"|dlog r_e| {_f(s['median_abs_dlog_re'])}, {s['seconds']:.1f} s", flush=True)
    info = machine_info()
    machine = (f"{info.get('cpu', 'CPU')} ({info.get('cpu_cores')} cores, {info.get('torch_threads')} "
               f"torch threads), no GPU used, torch {info.get('torch', '?')}")
    write_results(a.results, a.tag, {"machine": info, "results": results}, report(results, machine))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
