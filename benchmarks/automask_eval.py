"""Benchmark of the learned masker (``--mask maskrcnn``) against sep, on held-out simulations.

    python -m benchmarks.automask_eval --checkpoint ZOO/automask-sdss-r-slim-v1.safetensors \\
        --survey sdss --band r --n 100 --seed 9101 --size 128 --tag 2026-12-01-vm-cpu-automask

For each survey: simulates ``n`` contaminated cutouts (neighbours, stars, blends with
probability ``--blend-prob``; seeds never used in training) and the *same* galaxies alone
(``contaminants=False``, same seeds: same central galaxy and PSF, other noise).  Then:

* masks: central-galaxy IoU with the truth footprint, contaminant recall (>= 50% of a truth
  footprint of >= 10 px masked or modelled) overall and by magnitude, contaminant flux left in
  the central's unmasked footprint (truth footprint of the galaxy alone; noiseless contaminant
  light = noiseless(contaminated) - noiseless(alone)), mask AP50 (:func:`galmoss_auto.automask.
  instances.average_precision`, COCO-style 101-point, class-agnostic; torchmetrics' mask mAP
  needs pycocotools, absent here);
* fits (one Sérsic plus, as ``run`` fits it, a flat sky (``--sky``), LM, sep starting values
  on each masked cutout, the modelled neighbours hidden from the initializer as in ``run``,
  and, as ``run`` does unless ``--no-residual-search``, one missed source per cutout looked
  for in the residual and fitted where it lowers chi² by > 25; and, as ``run``, the centre
  check: a target fitted off the cutout centre swaps with a neighbour fitted there or is
  flagged):
  the same galaxies alone,
  with the truth masks (every contaminant's exact footprint from the simulator's segmentation,
  grown by ``TRUTH_MARGIN`` px, nothing modelled: the floor of any masker that masks and does
  not model),
  with sep masks, with the learned masks and neighbours fitted simultaneously
  (:func:`galmoss_auto.fitting.neighbours.fit_with_neighbours`): catastrophic fraction
  (|dmag| > 0.5 or |dlog r_e| > 0.3; also counted over the galaxies whose fit alone is not
  catastrophic: what the masks are answerable for), robust scatter (1.4826 MAD) of dmag,
  dlog r_e, dn, also apart for the cutouts with and without a truth blend;
* speed: ms per cutout of ``mask_batch`` on this machine (threads as set by ``--threads``).

Writes ``benchmarks/results/<tag>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table

from benchmarks.machine import write_results
from galmoss_auto.fitting.flags import Flag

RESULTS = Path(__file__).resolve().parent / "results"
MAG_BINS = (-np.inf, 18, 20, 22, 24, np.inf)
#: px by which the truth masks grow each contaminant's footprint: the simulator's footprints end
#: where the light drops below its segmentation threshold, and the wings beyond bias the fit
#: (on lsst, 2 px: catastrophic 8.3 -> 6.0 %, dmag scatter 0.092 -> 0.077 against none)
TRUTH_MARGIN = 2


def robust(v) -> float:
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    return float(1.4826 * np.median(np.abs(v - np.median(v)))) if v.size else float("nan")


def _simulate(survey, band, n, seed, size, out, contaminants, blend_prob):
    from galmoss_auto.data_scripts.contaminants import ContaminantConfig
    from galmoss_auto.data_scripts.simulate import simulate
    if not (out / "objects.ecsv").is_file():
        simulate(survey, band, n, seed=seed, out=out, size=size, workers=1, fits=False, progress=False,
                 contaminants=contaminants, contaminant_config=ContaminantConfig(blend_prob=blend_prob),
                 shard_size=max(n, 1))
    from galmoss_auto.data_scripts.outputs import read_shard
    meta = json.loads((out / "run.json").read_text())
    return read_shard(out / "shards" / "shard-00000.npz"), Table.read(out / "objects.ecsv"), \
        Table.read(out / "truth.ecsv"), meta


def _init(cutouts):
    from galmoss_auto.initnet.sep_init import SepInitializer
    sep_init = SepInitializer()
    cols = {f"sersic_{p}": [] for p in ("x", "y", "mag", "r_e", "n", "q", "pa")}
    for c in cutouts:
        r = sep_init(c)
        for p, v in r.params.items():
            cols[f"sersic_{p}"].append(v)
    return {k: np.asarray(v, float) for k, v in cols.items()}


def _start(cutouts, model) -> dict:
    """sep starting values for ``cutouts``, and ``model``'s sky (if it has one) started at 0:
    the simulations are sky-subtracted; a residual pedestal, e.g. a neighbour's wings, is fitted."""
    from galmoss_auto.fitting.model import sky_component
    init = _init(cutouts)
    sky_comp = sky_component(model)
    if sky_comp is not None:
        init[f"{sky_comp.name}_sky"] = np.zeros(len(cutouts))
    return init


def learned_path(cut, results, zp: float, model):
    """What the learned path fits (as ``run`` does): each cutout with the masker's mask, its
    starts (:func:`_start`) measured with the modelled neighbours' pixels hidden from the
    initializer (:func:`galmoss_auto.automask.base.initializer_view`), and the masker's
    neighbour lists.  Returns (cutouts, starts, neighbours)."""
    from galmoss_auto.automask.base import initializer_view
    from galmoss_auto.fitting import Cutout
    masked = [Cutout(id=c.id, image=c.image, sigma=c.sigma, psf=c.psf, zeropoint=zp, mask=r.mask)
              for c, r in zip(cut, results)]
    views = [initializer_view(c, r.neighbour_pixels) for c, r in zip(masked, results)]
    return masked, _start(views, model), [r.neighbours for r in results]


def _catastrophic(dm, dr) -> np.ndarray:
    """|dmag| > 0.5 or |dlog r_e| > 0.3 (or not finite), per galaxy."""
    dm, dr = np.asarray(dm, float), np.asarray(dr, float)
    return ~np.isfinite(dm) | ~np.isfinite(dr) | (np.abs(dm) > 0.5) | (np.abs(dr) > 0.3)


def truth_mask(segmentation: np.ndarray, margin: int = TRUTH_MARGIN) -> np.ndarray:
    """The simulator's exact contaminant footprints (labels > 1; 1 is the central galaxy),
    grown by ``margin`` px but never over the central's own footprint: the best mask a masker
    that only masks can draw."""
    from galmoss_auto.automask.detect import grow
    seg = np.asarray(segmentation)
    return grow(seg > 1, margin) & (seg != 1)


def _deltas(cat, truth) -> dict:
    dm = np.asarray(cat["sersic_mag"], float) - np.asarray(truth["sersic_mag"], float)
    dr = np.log10(np.asarray(cat["sersic_r_e"], float) / np.asarray(truth["sersic_r_e"], float))
    dn = np.asarray(cat["sersic_n"], float) - np.asarray(truth["sersic_n"], float)
    bad = _catastrophic(dm, dr)
    flags = np.asarray(cat["flags"], np.int64)
    swapped, offset = (flags & int(Flag.CENTRE_SWAPPED)) != 0, (flags & int(Flag.CENTRE_OFFSET)) != 0
    off = (flags & int(Flag.LIGHT_OFF_CUTOUT)) != 0
    return {"catastrophic": float(bad.mean()), "n_catastrophic": int(bad.sum()),
            "dmag_scatter": robust(dm), "dlogre_scatter": robust(dr), "dn_scatter": robust(dn),
            "dmag_median": float(np.nanmedian(dm)), "flags_nonzero_among_catastrophic":
            int(np.sum(bad & (flags != 0))), "catastrophic_flags0": float(np.mean(bad & (flags == 0))),
            "n_centre_swapped": int(swapped.sum()), "n_centre_swapped_catastrophic": int(np.sum(swapped & bad)),
            "n_centre_offset": int(offset.sum()), "n_centre_offset_catastrophic": int(np.sum(offset & bad)),
            "n_light_off_cutout": int(off.sum()), "n_light_off_cutout_catastrophic": int(np.sum(off & bad)),
            "_dm": dm.tolist(), "_dr": dr.tolist()}


def run_survey(masker, survey, band, n, seed, size, workdir: Path, blend_prob: float, sky: str = "flat",
               search: bool = True) -> dict:
    from galmoss_auto.automask.instances import KIND_TO_CLASS, average_precision, targets_from_segmentation
    from galmoss_auto.automask.predict import cutouts_from_shard
    from galmoss_auto.automask.sep_masker import SepMasker
    from galmoss_auto.automask.detect import detect
    from galmoss_auto.fitting import Cutout, fit
    from galmoss_auto.fitting.neighbours import fit_with_neighbours

    t0 = time.perf_counter()
    dirty, objects, truth, meta = _simulate(survey, band, n, seed, size, workdir / f"{survey}-{band}-s{seed}",
                                            True, blend_prob)
    clean, _, _, _ = _simulate(survey, band, n, seed, size, workdir / f"{survey}-{band}-s{seed}-alone",
                               False, blend_prob)
    t_sim = time.perf_counter() - t0
    zp = float(meta["zeropoint"])
    cut = cutouts_from_shard(dirty, zp)
    alone = cutouts_from_shard(clean, zp)
    # speed: the whole chunk through mask_batch (normalise + network + post-processing)
    t = time.perf_counter()
    results, details = masker.mask_batch(cut, torch.device("cpu"), return_details=True)
    ms = 1000 * (time.perf_counter() - t) / len(cut)
    sep = [SepMasker()(c) for c in cut]

    by_id: dict = {}
    for row in objects:
        by_id.setdefault(str(row["id"]), []).append(row)
    rec = {"maskrcnn": [], "sep": []}
    left = {"maskrcnn": [], "maskrcnn_unmodelled": [], "sep": [], "none": []}
    ious = {"maskrcnn": [], "sep": []}
    ap_pred, ap_truth = [], []
    for i, c in enumerate(cut):
        seg = dirty["segmentation"][i]
        classes = {int(r["label"]): KIND_TO_CLASS[str(r["kind"])] for r in by_id[c.id] if str(r["kind"]) in KIND_TO_CLASS}
        tgt = targets_from_segmentation(seg, classes)
        d = details[i]
        inst = d.instances
        ap_pred.append((inst.scores, inst.masks) if inst is not None else (np.zeros(0), np.zeros((0,) + c.shape, bool)))
        ap_truth.append(tgt["masks"].numpy().astype(bool))
        det = detect(c.image, c.sigma, c.mask)
        sep_central = det.segmap == det.central + 1 if det.central >= 0 else np.zeros(c.shape, bool)
        learned = d.central_mask if results[i].method == "maskrcnn" else None
        for m, central in (("maskrcnn", learned), ("sep", sep_central)):
            central = np.zeros(c.shape, bool) if central is None else central
            union = (central | (seg == 1)).sum()
            ious[m].append(float((central & (seg == 1)).sum() / union) if union else 0.0)
        modelled = np.zeros(c.shape, bool)
        for nm in d.neighbour_masks:
            modelled |= nm
        covered = {"maskrcnn": results[i].mask | modelled, "sep": sep[i].mask}
        for r in by_id[c.id]:
            if int(r["label"]) <= 1:
                continue
            fp = seg == int(r["label"])
            if fp.sum() < 10:
                continue
            for m in rec:
                rec[m].append((float(r["mag"]), str(r["kind"]), bool((covered[m] & fp).sum() >= 0.5 * fp.sum())))
        contam = dirty["noiseless"][i].astype(float) - clean["noiseless"][i].astype(float)
        footprint = clean["segmentation"][i] == 1
        central_flux = max(float(clean["noiseless"][i].sum()), 1e-30)
        for m, mask in (("maskrcnn", results[i].mask), ("sep", sep[i].mask), ("none", np.zeros(c.shape, bool))):
            left[m].append(float(np.clip(contam[footprint & ~mask], 0, None).sum()) / central_flux)
        from galmoss_auto.automask.detect import grow
        left["maskrcnn_unmodelled"].append(
            float(np.clip(contam[footprint & ~results[i].mask & ~grow(modelled, max(d.margin, 1))], 0, None).sum())
            / central_flux)

    def recall(rows, lo=-np.inf, hi=np.inf):
        sel = [hit for mag, _, hit in rows if lo <= mag < hi]
        return (float(np.mean(sel)) if sel else float("nan")), len(sel)

    out = {"survey": survey, "band": band, "n": len(cut), "seed": seed, "size": size, "blend_prob": blend_prob,
           "sky": sky, "residual_search": search,
           "simulate_s": round(t_sim, 1), "mask_ms_per_cutout": round(ms, 1),
           "n_fallback_sep": int(sum(r.method == "sep" for r in results)),
           "n_with_neighbours": int(sum(bool(r.neighbours) for r in results)),
           "n_neighbours": int(sum(len(r.neighbours) for r in results)),
           "mask_ap50": average_precision(ap_pred, ap_truth)}
    for m in ("maskrcnn", "sep"):
        out[f"{m}_central_iou_mean"] = float(np.mean(ious[m]))
        out[f"{m}_central_iou_median"] = float(np.median(ious[m]))
        out[f"{m}_contaminant_recall"] = recall(rec[m])[0]
        out[f"{m}_recall_by_mag"] = {f"{lo}-{hi}": recall(rec[m], lo, hi) for lo, hi in zip(MAG_BINS[:-1], MAG_BINS[1:])}
    for m, v in left.items():
        out[f"contaminant_flux_left_{m}_mean"] = float(np.mean(v))
        out[f"contaminant_flux_left_{m}_p90"] = float(np.percentile(v, 90))

    # fits: alone / sep masks / learned masks + neighbours, sep starting values on each
    t = time.perf_counter()
    fits = {}
    masked_sep = [Cutout(id=c.id, image=c.image, sigma=c.sigma, psf=c.psf, zeropoint=zp, mask=r.mask) for c, r in zip(cut, sep)]
    # the model `run` fits: one Sérsic plus (by default) a flat sky
    from galmoss_auto.pipelines.run import run_model
    model = run_model(None, sky)

    def start(cutouts):
        return _start(cutouts, model)

    # every path as run fits it: with the residual search (fit_with_neighbours' search) unless off
    none = [[] for _ in cut]
    fits["alone"], _ = fit_with_neighbours(alone, start(alone), none, model, device="cpu", errors="none", search=search,
                                           centred=True)
    fits["sep"], _ = fit_with_neighbours(masked_sep, start(masked_sep), none, model, device="cpu", errors="none",
                                         search=search, centred=True)
    masked_truth = [Cutout(id=c.id, image=c.image, sigma=c.sigma, psf=c.psf, zeropoint=zp,
                           mask=truth_mask(dirty["segmentation"][i])) for i, c in enumerate(cut)]
    fits["truth_masks"], _ = fit_with_neighbours(masked_truth, start(masked_truth), none, model, device="cpu",
                                                 errors="none", search=search, centred=True)
    masked_ml, init_ml, nbs = learned_path(cut, results, zp, model)
    fits["maskrcnn"], nb_table = fit_with_neighbours(masked_ml, init_ml, nbs, model, device="cpu", errors="none",
                                                     search=search, centred=True)
    out["n_residual_sources"] = int(np.sum(np.asarray(nb_table["origin"]) == "residual"))
    out["fit_s"] = round(time.perf_counter() - t, 1)
    for m, cat in fits.items():
        out[f"fit_{m}"] = _deltas(cat, truth)
    clean_scatter = out["fit_alone"]["dmag_scatter"]

    def catastrophic(m):
        return _catastrophic(out[f"fit_{m}"]["_dm"], out[f"fit_{m}"]["_dr"])
    for m in ("truth_masks", "sep", "maskrcnn"):
        out[f"fit_{m}"]["dmag_scatter_over_alone"] = out[f"fit_{m}"]["dmag_scatter"] / clean_scatter
        # what the masker is answerable for: galaxies whose fit alone is fine
        out[f"fit_{m}"]["catastrophic_beyond_alone"] = float(np.mean(catastrophic(m) & ~catastrophic("alone")))
    # the galaxies that have a truth blend (close neighbour)
    blended = np.array([any(str(r["kind"]) == "blend" for r in by_id[c.id]) for c in cut])
    out["n_with_blend"] = int(blended.sum())
    for m in fits:
        dm = np.asarray(out[f"fit_{m}"]["_dm"])
        bad = catastrophic(m)
        out[f"fit_{m}"]["catastrophic_with_blend"] = float(bad[blended].mean()) if blended.any() else float("nan")
        out[f"fit_{m}"]["dmag_scatter_with_blend"] = robust(dm[blended])
        out[f"fit_{m}"]["catastrophic_without_blend"] = float(bad[~blended].mean()) if (~blended).any() else float("nan")
        out[f"fit_{m}"]["dmag_scatter_without_blend"] = robust(dm[~blended])
    return out


def _markdown(record: dict) -> str:
    lines = [f"# Automask benchmark: {record['tag']}", "", f"Machine: {record['machine']}; torch threads "
             f"{record['threads']}; checkpoints: " + ", ".join(f"{k} (sha256 {v[:12]}...)" for k, v in record["checkpoints"].items()),
             "", "Held-out simulations (seeds never used in training), contaminated cutouts (neighbours, stars, "
             "blends) vs the same galaxies simulated alone. Fits: one Sérsic (+ sky: "
             + ", ".join(sorted({r.get('sky', 'none') for r in record['surveys']})) + "), LM, sep starting values; "
             "residual search (a missed source fitted as an extra Sérsic where chi² drops by > 25): "
             + ", ".join(sorted({"on" if r.get("residual_search") else "off" for r in record["surveys"]}))
             + " (every path, as run).", ""]
    hdr = ("| survey | n | central IoU ML / sep | recall ML / sep | AP50 | flux left ML / ML unmodelled / sep / none | "
           "catastrophic alone / sep / ML | catastrophic where alone is fine sep / ML | dmag scatter alone / sep / ML | "
           "dlog re scatter alone / sep / ML | "
           "dn scatter alone / sep / ML | ML fallbacks | ms/cutout |")
    lines += [hdr, "|" + "---|" * (hdr.count("|") - 1)]
    for r in record["surveys"]:
        f = {m: r[f"fit_{m}"] for m in ("alone", "sep", "maskrcnn")}
        lines.append(
            f"| {r['survey']}-{r['band']} {r['size']}px | {r['n']} | {r['maskrcnn_central_iou_mean']:.3f} / {r['sep_central_iou_mean']:.3f} | "
            f"{r['maskrcnn_contaminant_recall']:.3f} / {r['sep_contaminant_recall']:.3f} | {r['mask_ap50']:.3f} | "
            f"{r['contaminant_flux_left_maskrcnn_mean']:.4f} / {r['contaminant_flux_left_maskrcnn_unmodelled_mean']:.4f} / "
            f"{r['contaminant_flux_left_sep_mean']:.4f} / {r['contaminant_flux_left_none_mean']:.4f} | "
            f"{f['alone']['catastrophic']:.3f} / {f['sep']['catastrophic']:.3f} / {f['maskrcnn']['catastrophic']:.3f} | "
            f"{f['sep'].get('catastrophic_beyond_alone', float('nan')):.3f} / "
            f"{f['maskrcnn'].get('catastrophic_beyond_alone', float('nan')):.3f} | "
            f"{f['alone']['dmag_scatter']:.4f} / {f['sep']['dmag_scatter']:.4f} / {f['maskrcnn']['dmag_scatter']:.4f} | "
            f"{f['alone']['dlogre_scatter']:.4f} / {f['sep']['dlogre_scatter']:.4f} / {f['maskrcnn']['dlogre_scatter']:.4f} | "
            f"{f['alone']['dn_scatter']:.3f} / {f['sep']['dn_scatter']:.3f} / {f['maskrcnn']['dn_scatter']:.3f} | "
            f"{r['n_fallback_sep']} | {r['mask_ms_per_cutout']:.1f} |")
    lines += ["", "Recall by contaminant magnitude (ML / sep, count):", ""]
    for r in record["surveys"]:
        parts = [f"{k}: {v[0]:.2f} / {r['sep_recall_by_mag'][k][0]:.2f} ({v[1]})"
                 for k, v in r["maskrcnn_recall_by_mag"].items() if v[1]]
        lines.append(f"- {r['survey']}: " + "; ".join(parts))
    lines += ["", "Galaxies with a truth blend (close neighbour): catastrophic fraction alone / sep / ML:", ""]
    for r in record["surveys"]:
        f = {m: r[f"fit_{m}"] for m in ("alone", "sep", "maskrcnn")}
        lines.append(f"- {r['survey']} ({r['n_with_blend']} galaxies): {f['alone']['catastrophic_with_blend']:.3f} / "
                     f"{f['sep']['catastrophic_with_blend']:.3f} / {f['maskrcnn']['catastrophic_with_blend']:.3f}; "
                     f"dmag scatter {f['alone']['dmag_scatter_with_blend']:.4f} / {f['sep']['dmag_scatter_with_blend']:.4f} / "
                     f"{f['maskrcnn']['dmag_scatter_with_blend']:.4f}")
    lines += ["", f"Every fit path, with the truth masks (the simulator's contaminant footprints grown by {TRUTH_MARGIN} px, "
              "nothing modelled: the floor of masking): catastrophic fraction and dmag scatter, all / with a truth "
              "blend / without; the scatter's ratio to the galaxies alone:", "",
              "| survey | path | catastrophic all / blend / no blend | dmag scatter all / blend / no blend | "
              "scatter / alone |", "|---|---|---|---|---|"]
    for r in record["surveys"]:
        for m, label in (("alone", "alone"), ("truth_masks", "truth masks"), ("sep", "sep"), ("maskrcnn", "ML")):
            f = r.get(f"fit_{m}")
            if f is None or "catastrophic_without_blend" not in f:
                continue
            ratio = f.get("dmag_scatter_over_alone", 1.0)      # the galaxies alone: 1
            lines.append(f"| {r['survey']} | {label} | {f['catastrophic']:.3f} / {f['catastrophic_with_blend']:.3f} / "
                         f"{f['catastrophic_without_blend']:.3f} | {f['dmag_scatter']:.4f} / "
                         f"{f['dmag_scatter_with_blend']:.4f} / {f['dmag_scatter_without_blend']:.4f} | {ratio:.2f} |")
    lines += ["", "Centre check (as run: cutouts centred on their targets; a target fitted > max(5 px, 1 FWHM) off "
              "the centre swaps with a fitted neighbour there, CENTRE_SWAPPED, or is flagged CENTRE_OFFSET): "
              "swapped (catastrophic after) / offset-flagged (catastrophic) / catastrophic with flags 0, "
              "alone; sep; ML:", ""]
    for r in record["surveys"]:
        parts = []
        for m in ("alone", "sep", "maskrcnn"):
            f = r[f"fit_{m}"]
            if "n_centre_swapped" in f:
                parts.append(f"{f['n_centre_swapped']} ({f['n_centre_swapped_catastrophic']}) / {f['n_centre_offset']} "
                             f"({f['n_centre_offset_catastrophic']}) / {f['catastrophic_flags0']:.3f}")
        if parts:
            lines.append(f"- {r['survey']}: " + "; ".join(parts))
    lines += ["", "Light off the cutout (LIGHT_OFF_CUTOUT: under half of the target's fitted light on the "
              "cutout): flagged (of them catastrophic), alone; truth masks; sep; ML:", ""]
    for r in record["surveys"]:
        parts = [f"{f['n_light_off_cutout']} ({f['n_light_off_cutout_catastrophic']})"
                 for f in (r.get(f"fit_{m}") for m in ("alone", "truth_masks", "sep", "maskrcnn"))
                 if f is not None and "n_light_off_cutout" in f]
        if parts:
            lines.append(f"- {r['survey']}: " + "; ".join(parts))
    if record.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in record["notes"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", nargs="+", required=True, help="SURVEY=FILE per survey, or one FILE for all")
    p.add_argument("--survey", nargs="+", default=["sdss"])
    p.add_argument("--band", default="r")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--seed", type=int, default=9101)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--blend-prob", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workdir", default="/tmp/galmoss_automask_eval")
    p.add_argument("--tag", default=time.strftime("%Y-%m-%d") + "-vm-cpu-automask")
    p.add_argument("--sky", default="flat", choices=["flat", "tilted", "none"],
                   help="sky component fitted with the galaxy (default flat, as run)")
    p.add_argument("--results", default=str(RESULTS), help="folder for the .json/.md (default benchmarks/results)")
    p.add_argument("--note", action="append", default=[])
    p.add_argument("--no-residual-search", dest="residual_search", action="store_false",
                   help="fit without the residual search (run's --no-residual-search)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from galmoss_auto.automask.predict import MaskRCNNMasker
    from galmoss_auto.models import sha256_file

    ckpts = {}
    for item in a.checkpoint:
        s, _, f = item.rpartition("=")
        ckpts[s or "*"] = f
    record = {"tag": a.tag, "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} torch threads, CPU", "threads": a.threads, "checkpoints": {},
              "surveys": [], "notes": a.note}
    for k, survey in enumerate(a.survey):
        path = ckpts.get(survey, ckpts.get("*"))
        if path is None:
            raise SystemExit(f"no checkpoint for survey {survey}")
        record["checkpoints"][Path(path).name] = sha256_file(path)
        masker = MaskRCNNMasker(checkpoint=path)
        r = run_survey(masker, survey, a.band, a.n, a.seed + k, a.size, Path(a.workdir), a.blend_prob, a.sky,
                       a.residual_search)
        record["surveys"].append(r)
        print(json.dumps({k: v for k, v in r.items() if not isinstance(v, dict)}), flush=True)
    path = write_results(a.results, a.tag, record, _markdown(record))
    print(f"wrote {path} and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
