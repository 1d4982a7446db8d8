"""Simulate survey cutouts of galaxies with exact truth, using GalSim.

``simulate(survey="sdss", band="r", n=1000, seed=1, out=DIR)`` writes, in ``DIR``:

* ``cutouts/<id>.fits``: per-galaxy FITS like a real survey cutout (image + SIGMA, PSF, SEG, MODEL);
* ``shards/shard-NNNNN.npz``: the same arrays stacked, for training (see ``shards.py``);
* ``truth.ecsv`` (+ ``.fits``): one row per cutout for the central galaxy, catalog conventions;
* ``objects.ecsv``: one row per object (central, neighbours, stars, artifacts) with its label in
  the segmentation map;
* ``manifest.ecsv`` (+ ``.csv``): what ``galmoss-auto run`` reads.

Every cutout depends only on ``(seed, index)`` (its generator is ``SeedSequence([seed, index])``),
so results are identical for any number of workers.  Command line::

    galmoss-auto simulate --survey sdss --band r --n 1000 --seed 1 --out DIR [--preview preview.png]
    python -m galmoss_auto.data_scripts.simulate --survey sdss --band r --n 1000 --seed 1 --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .contaminants import ContaminantConfig, draw_contaminants
from .outputs import (manifest_table, objects_table, truth_table, write_cutout_fits, write_shard,
                      write_table, COMPONENTS, PARAMS)
from .populations import component_flux, draw_central, galaxy_profile, sersic_profile
from .surveys import Survey, load_survey

__all__ = ["SimConfig", "simulate_one", "simulate", "add_parser", "main"]

POPULATIONS = tuple(COMPONENTS)


def _galsim():
    """GalSim is the optional ``sim`` extra: import it (and what needs it) only when simulating,
    so that ``add_parser`` works, and says what to install, without it."""
    try:
        import galsim
    except ImportError:
        raise RuntimeError("simulating needs GalSim: pip install 'galmoss-auto[sim]' (or pip install galsim)") from None
    return galsim


@dataclass(frozen=True)
class SimConfig:
    """Everything that defines a simulated data set except the seed and the count.

    size: cutout side in px (>= 32).  centre_jitter: r.m.s. offset (px) of the central galaxy from
    the cutout centre.  seg_threshold: segmentation footprint = pixels where an object's noiseless
    model exceeds ``seg_threshold`` x the sky sigma (default 1).  psf_images: user PSFs (one drawn
    per cutout) instead of the preset's model.
    """

    survey: Survey
    band: str
    size: int = 128
    population: str = "sersic"
    contaminants: bool = True
    substructure: bool = False
    contaminant_config: ContaminantConfig = field(default_factory=ContaminantConfig)
    centre_jitter: float = 1.5
    seg_threshold: float = 1.0
    psf_images: tuple = ()

    def __post_init__(self):
        self.survey.band(self.band)
        if self.size < 32:
            raise ValueError(f"size must be >= 32 px, got {self.size}")
        if self.population not in POPULATIONS:
            raise ValueError(f"population must be one of {POPULATIONS}, got {self.population!r}")
        if not 0 <= self.centre_jitter <= self.size / 8:
            raise ValueError(f"centre_jitter must be in [0, size/8 = {self.size / 8}] px, got {self.centre_jitter}")
        if not self.seg_threshold > 0:
            raise ValueError(f"seg_threshold must be > 0 (units of sky sigma), got {self.seg_threshold}")

    @property
    def sky_level(self) -> float:
        return self.survey.band(self.band).sky_level(self.survey.zeropoint, self.survey.pixel_scale)

    @property
    def sky_sigma(self) -> float:
        return self.survey.band(self.band).sky_sigma(self.survey.zeropoint, self.survey.pixel_scale)

    def header(self) -> dict:
        s, b = self.survey, self.survey.band(self.band)
        galsim = _galsim()
        return {"SURVEY": s.name, "BAND": self.band, "ZP": s.zeropoint, "MAGZP": s.zeropoint,
                "PIXSCALE": s.pixel_scale, "GAIN": b.gain, "BUNIT": s.image_unit,
                "SKYSIG": self.sky_sigma, "ORIGIN": "galmoss-auto simulate (GalSim " + galsim.__version__ + ")"}


def cutout_id(config: SimConfig, seed: int, index: int) -> str:
    return f"{config.survey.name}-{config.band}-s{seed}-{index:07d}"


def _central_truth(central: dict, population: str) -> dict:
    row = {"model": central["model"], "total_mag": central["total_mag"], "bt": central["bt"],
           "substructure": central["substructure"].get("kind", ""),
           "substructure_frac": central["substructure"].get("frac", 0.0)}
    for comp in COMPONENTS[population]:
        values = central["components"].get(comp)
        for p in PARAMS:
            row[f"{comp}_{p}"] = float(values[p]) if values is not None else math.nan
    return row


def simulate_one(config: SimConfig, index: int, seed: int) -> dict:
    """One cutout, a pure function of (config, index, seed).

    Returns a dict: id, index, image, sigma, noiseless (float32, size x size, image units),
    psf (float32, effective PSF, unit sum), segmentation (int16: 0 sky, 1 central, 2.. objects in
    ``objects`` order), truth (dict: the central galaxy's truth-table row), objects (list of dicts:
    the objects-table rows of this cutout).
    """
    galsim = _galsim()
    from .psf import BRIGHT_RATIO, draw_psf, effective_psf_image
    from .scene import add_noise, bright_star_profile, draw_object, segmentation, star_profile

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    s, size = config.survey, config.size
    band = s.band(config.band)
    zp = s.zeropoint
    psf_prof, psf_info = draw_psf(s, config.band, rng, list(config.psf_images))
    psf_img = effective_psf_image(psf_prof, s.psf_size)
    central = draw_central(rng, s, config.band, config.population, size, config.centre_jitter,
                           config.substructure)
    sky_level, sky_sigma = config.sky_level, config.sky_sigma
    conts = (draw_contaminants(rng, s, config.band, size, central, config.contaminant_config,
                               sky_sigma, sky_level) if config.contaminants else [])
    host = central["components"][central["host"]]
    bright_flux = BRIGHT_RATIO * sky_sigma
    stamps = [draw_object(galaxy_profile(central, zp), psf_prof, host["x"], host["y"], size, full=True,
                          bright=component_flux(central["total_mag"], zp) > bright_flux)]
    artifacts = []
    for k, obj in enumerate(conts):
        kind = obj["kind"]
        flux = component_flux(obj["mag"], zp)
        if kind in ("galaxy", "blend"):
            stamp = draw_object(sersic_profile(obj, flux), psf_prof, obj["x"], obj["y"], size,
                                bright=flux > bright_flux)
        elif kind == "star":
            stamp = draw_object(star_profile(flux), psf_prof, obj["x"], obj["y"], size,
                                max_stamp=4 * s.psf_size + 1, bright=flux > bright_flux)
        elif kind == "bright_star":
            prof = bright_star_profile(flux, psf_prof, psf_info["psf_fwhm"] / s.pixel_scale)
            stamp = draw_object(prof, None, obj["x"], obj["y"], size, cover=True, bright=True,
                                method="no_pixel")
        else:
            stamp = None
            artifacts.append((k + 2, obj["pixels"], obj["mode"]))
        stamps.append(stamp)
    noiseless = np.zeros((size, size), np.float64)
    for stamp in stamps:
        if stamp is not None:
            noiseless[stamp.slices] += stamp.array
    seg = segmentation(stamps, config.seg_threshold * sky_sigma, size, [(lab, pix) for lab, pix, _ in artifacts])
    image, sigma = add_noise(rng, noiseless, sky_level, band.gain, band.read_noise)
    for _, (rows, cols, values), mode in artifacts:
        if mode == "set":
            image[rows, cols] = values
        else:
            image[rows, cols] += values
    gid = cutout_id(config, seed, index)
    npix = np.bincount(seg.ravel(), minlength=len(conts) + 2)
    truth = {"id": gid, **_central_truth(central, config.population), **psf_info,
             "sky_sigma": sky_sigma, "sky_level": sky_level, "n_contaminants": len(conts), "index": int(index)}
    sersic_like = central["components"].get("sersic", {})
    objects = [{"id": gid, "label": 1, "kind": "central", "x": host["x"], "y": host["y"],
                "mag": central["total_mag"], "bt": central["bt"], "npix": int(npix[1]),
                **{p: sersic_like.get(p, math.nan) for p in ("r_e", "r_e_arcsec", "n", "q", "pa")}}]
    for k, obj in enumerate(conts):
        objects.append({"id": gid, "label": k + 2, "npix": int(npix[k + 2]), "bt": math.nan,
                        **{key: obj[key] for key in ("kind", "x", "y", "mag", "r_e", "r_e_arcsec", "n", "q", "pa")}})
    return {"id": gid, "index": int(index), "image": image.astype(np.float32),
            "sigma": sigma.astype(np.float32), "noiseless": noiseless.astype(np.float32),
            "psf": psf_img.astype(np.float32), "segmentation": seg.astype(np.int16),
            "truth": truth, "objects": objects}


def _run_shard(job: tuple) -> tuple[int, list, list, list]:
    """Worker: simulate one shard's indices and write its files; returns table rows."""
    config, seed, shard, indices, out, fits, shards = job
    out = Path(out)
    results, truth, objects, manifest = [], [], [], []
    header = config.header()
    b = config.survey.band(config.band)
    for local, index in enumerate(indices):
        res = simulate_one(config, index, seed)
        row = {"id": res["id"], "zeropoint": config.survey.zeropoint,
               "pixel_scale": config.survey.pixel_scale, "gain": b.gain, "mask": ""}
        if fits:
            name = f"cutouts/{res['id']}.fits"
            write_cutout_fits(out / name, res, header)
            row.update(image=f"{name}[0]", sigma=f"{name}[SIGMA]", psf=f"{name}[PSF]",
                       segmentation=f"{name}[SEG]", model=f"{name}[MODEL]")
        if shards:
            row.update(shard=f"shards/shard-{shard:05d}.npz", shard_index=local)
        else:
            row.update(shard="", shard_index=-1)
        manifest.append(row)
        truth.append(res["truth"])
        objects.extend(res["objects"])
        if shards:
            results.append(res)
    if shards:
        write_shard(out / "shards" / f"shard-{shard:05d}.npz", results)
    return shard, truth, objects, manifest


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with lightning; without it, no bar
        return None
    return tqdm(total=total, unit="cutout", desc="simulate", file=sys.stderr, smoothing=0.1)


def simulate(survey: str | Survey = "sdss", band: str = "r", n: int = 100, seed: int = 1, out="sim",
             size: int = 128, population: str = "sersic", contaminants: bool = True,
             substructure: bool = False, workers: int | None = None, fits: bool = True,
             shards: bool = True, progress: bool = True, artifacts: bool = False,
             shard_size: int = 128, psf_files=(), psf_pixel_scale: float | None = None,
             contaminant_config: ContaminantConfig | None = None, seg_threshold: float = 1.0,
             centre_jitter: float = 1.5, mag_range: tuple[float, float] | None = None,
             blend_prob: float | None = None) -> Path:
    """Simulate ``n`` cutouts into folder ``out``; returns the path of ``manifest.ecsv``.

    survey: preset name or TOML path (or a :class:`Survey`); band: one of its bands;
    size: cutout side, px; population: "sersic", "bulge_disk" or "mixed"; contaminants: add
    neighbours and stars; artifacts: also bright-star halos, bad columns, cosmic rays;
    substructure: clumps / arms / bars on disk-like centrals; workers: processes (default: CPU count);
    fits / shards: which products to write (at least one); shard_size: cutouts per shard;
    psf_files: FITS PSF images to use instead of the preset's model (pixel scale from the header
    PIXSCALE or ``psf_pixel_scale``); mag_range: (bright, faint) reference-band magnitudes of the
    central galaxies, overriding the preset's ``[population] mag_range``; blend_prob: the
    probability (0-1) that a cutout gets a close blend (a galaxy on top of the central), overriding
    ``contaminant_config``'s (default 0.3; recorded in run.json).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not (fits or shards):
        raise ValueError("nothing to write: enable fits and/or shards")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    galsim = _galsim()
    from .psf import PsfImage, read_psf_file

    survey_obj = survey if isinstance(survey, Survey) else load_survey(survey)
    if mag_range is not None:
        lo, hi = (float(v) for v in mag_range)
        if not hi > lo:
            raise ValueError(f"mag_range must be (bright, faint) with faint > bright, got {mag_range}")
        survey_obj = dataclasses.replace(survey_obj, population={**survey_obj.population, "mag_range": [lo, hi]})
    psf_images = tuple(read_psf_file(p, psf_pixel_scale) if not isinstance(p, PsfImage) else p
                       for p in psf_files)
    cc = contaminant_config or ContaminantConfig(artifacts=artifacts)
    if artifacts and not cc.artifacts:
        cc = ContaminantConfig(**{**cc.__dict__, "artifacts": True})
    if blend_prob is not None:
        cc = ContaminantConfig(**{**cc.__dict__, "blend_prob": float(blend_prob)})
    config = SimConfig(survey=survey_obj, band=band, size=size, population=population,
                       contaminants=contaminants, substructure=substructure, contaminant_config=cc,
                       centre_jitter=centre_jitter, seg_threshold=seg_threshold, psf_images=psf_images)
    out = Path(out)
    (out / "cutouts").mkdir(parents=True, exist_ok=True) if fits else None
    (out / "shards").mkdir(parents=True, exist_ok=True) if shards else None
    jobs = [(config, seed, k, list(range(start, min(start + shard_size, n))), str(out), fits, shards)
            for k, start in enumerate(range(0, n, shard_size))]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    bar = _progress(n, progress)
    t0 = time.perf_counter()
    done = {}
    if workers == 1:
        for job in jobs:
            res = _run_shard(job)
            done[res[0]] = res
            bar.update(len(res[1])) if bar else None
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            for res in pool.imap_unordered(_run_shard, jobs):
                done[res[0]] = res
                bar.update(len(res[1])) if bar else None
    if bar:
        bar.close()
    elapsed = time.perf_counter() - t0
    b = survey_obj.band(band)
    meta = {"survey": survey_obj.name, "band": band, "seed": int(seed), "n": int(n), "size": int(size),
            "population": population, "contaminants": bool(contaminants), "artifacts": bool(cc.artifacts),
            "blend_prob": float(cc.blend_prob) if contaminants else 0.0,
            "substructure": bool(substructure), "zeropoint": survey_obj.zeropoint,
            "pixel_scale": survey_obj.pixel_scale, "gain": b.gain, "image_unit": survey_obj.image_unit,
            "sky_sigma": config.sky_sigma, "seg_threshold_sky_sigma": seg_threshold,
            "psf": "files: " + ", ".join(p.source for p in psf_images) if psf_images else survey_obj.psf_model,
            "galsim": galsim.__version__, "conventions": "x,y 1-based FITS pixels; r_e major-axis px; "
            "pa deg CCW from +y; mag = zeropoint - 2.5 log10(flux)"}
    order = sorted(done)
    truth = truth_table([r for k in order for r in done[k][1]], population, meta)
    write_table(truth, out / "truth.ecsv", "fits")
    write_table(objects_table([r for k in order for r in done[k][2]], meta), out / "objects.ecsv", None)
    manifest_path = out / "manifest.ecsv"
    write_table(manifest_table([r for k in order for r in done[k][3]], meta), manifest_path, "csv")
    timing = {"n": n, "workers": workers, "seconds": round(elapsed, 3),
              "cutouts_per_second": round(n / elapsed, 2) if elapsed > 0 else None}
    (out / "run.json").write_text(json.dumps({**meta, **timing}, indent=2) + "\n")
    return manifest_path


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``simulate`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser("simulate", help="simulate survey cutouts with exact truth (GalSim)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _arguments(p)
    p.set_defaults(func=run_from_args)
    return p


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--survey", default="sdss", help="preset name (sdss, legacy, hsc, lsst) or a .toml path")
    p.add_argument("--band", default="r")
    p.add_argument("--n", type=int, default=100, help="number of cutouts")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=int, default=128, help="cutout side, px")
    p.add_argument("--population", choices=POPULATIONS, default="sersic")
    p.add_argument("--mag-range", type=float, nargs=2, default=None, metavar=("BRIGHT", "FAINT"),
                   help="central galaxies' magnitude range (reference band; default: the preset's)")
    p.add_argument("--no-contaminants", dest="contaminants", action="store_false")
    p.add_argument("--artifacts", action="store_true", help="bright-star halos, bad columns, cosmic rays")
    p.add_argument("--blend-prob", dest="blend_prob", type=float, default=None,
                   help="probability (0-1) that a cutout has a close blend, a galaxy overlapping "
                   "the central one (default 0.3)")
    p.add_argument("--substructure", action="store_true", help="clumps, arms, bars on disk-like centrals")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--no-fits", dest="fits", action="store_false", help="skip per-galaxy FITS files")
    p.add_argument("--no-shards", dest="shards", action="store_false", help="skip the .npz shards")
    p.add_argument("--shard-size", type=int, default=128)
    p.add_argument("--psf-file", action="append", default=[], help="PSF image (FITS) to use instead of "
                   "the preset's model; repeat for several (one picked per cutout)")
    p.add_argument("--psf-pixel-scale", type=float, default=None, help="arcsec/px of the PSF files "
                   "(default: their PIXSCALE header)")
    p.add_argument("--seg-threshold", type=float, default=1.0, help="footprint threshold, sky sigmas")
    p.add_argument("--preview", default=None, help="also write a preview PNG of the first cutouts")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_from_args(args) -> int:
    """Run the ``simulate`` subcommand; returns the exit code (0 ok, 2 bad input)."""
    try:
        manifest = simulate(survey=args.survey, band=args.band, n=args.n, seed=args.seed, out=args.out,
                            size=args.size, population=args.population, contaminants=args.contaminants,
                            substructure=args.substructure, workers=args.workers, fits=args.fits,
                            shards=args.shards, progress=not args.quiet, artifacts=args.artifacts,
                            shard_size=args.shard_size, psf_files=args.psf_file,
                            psf_pixel_scale=args.psf_pixel_scale, seg_threshold=args.seg_threshold,
                            mag_range=args.mag_range, blend_prob=args.blend_prob)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"galmoss-auto simulate: error: {exc}", file=sys.stderr)
        return 2
    run = json.loads((manifest.parent / "run.json").read_text())
    print(f"wrote {run['n']} cutouts to {manifest.parent} in {run['seconds']:.1f} s "
          f"({run['cutouts_per_second']} cutouts/s, {run['workers']} workers); manifest: {manifest}")
    if args.preview:
        from .preview import preview
        print(f"preview: {preview(manifest.parent, args.preview)}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m galmoss_auto.data_scripts.simulate",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
