"""Fits through PSF files that carry a pedestal (a flat background under the PSF image).

    python -m benchmarks.psf_pedestal --tag 2026-12-07-vm-cpu-psf-pedestal

Simulates ``--n`` Sérsic galaxies (GalSim; n 1-4, r_e 4-12 px circularised, q 0.6, mag
15.5-16.5 at zero-point 25, Gaussian noise of 2 counts, 96²) convolved with a true PSF, and
fits each with ``galmoss-auto run`` (sep masks and starts, flat sky) given PSF files that differ
only by a constant:

- ``moffat``: a Moffat (β 3, FWHM 3.5 px) drawn on 41², as given and with a level of +0.02,
  +0.05, -0.05 and -0.2 % of its peak added;
- ``abdurrouf`` (where ``--shared`` holds it): the stacked SDSS r PSF of Abdurro'uf et al.
  (0.25 arcsec/px, 193²) as published, and with its border level removed by hand (the true
  PSF of the simulation, resampled to 0.396 arcsec/px).

Per PSF file: the median and largest |Δ| of mag and log r_e against the truth, and what the
reader said.  Writes ``<results>/<tag>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import machine_info, write_results

ZP = 25.0
LEVELS = (0.0, 0.02, 0.05, -0.05, -0.2)        # per cent of the peak
ABDURROUF_R = "psf_sdss_empirical_abdurrouf/psf_emp_sdss_r.fits.gz"


def _border_median(a: np.ndarray, width: int) -> float:
    ring = np.ones(a.shape, bool)
    ring[width:-width, width:-width] = False
    return float(np.median(a[ring]))


def _psf_cases(shared: Path | None) -> dict:
    """{name: (true GalSim PSF, {file name: (array, header)})}."""
    import galsim
    from astropy.io import fits

    moffat = galsim.Moffat(beta=3.0, fwhm=3.5)
    img = moffat.drawImage(nx=41, ny=41, scale=1.0).array
    cases = {"moffat": (moffat, {f"moffat{p:+.2f}%": (img + p * 1e-2 * img.max(), {}) for p in LEVELS})}
    path = shared / ABDURROUF_R if shared is not None else None
    if path is not None and path.is_file():
        raw = fits.getdata(path).astype(float)
        clean = raw - _border_median(raw, 12)
        true = galsim.InterpolatedImage(galsim.Image(clean / clean.sum(), scale=0.25 / 0.396), flux=1.0)
        cases["abdurrouf"] = (true, {"abdurrouf-r-published": (raw, {"PIXSCALE": 0.25}),
                                     "abdurrouf-r-level-removed": (clean, {"PIXSCALE": 0.25})})
    return cases


def run_case(name: str, true_psf, files: dict, n: int, seed: int, workdir: Path) -> dict:
    import galsim
    from astropy.io import fits
    from astropy.table import Table

    from galmoss_auto.pipelines.config import RunConfig
    from galmoss_auto.pipelines.run import run

    rng = np.random.default_rng(seed)
    truth, images = {}, {}
    for i in range(n):
        sersic_n = (1.0, 2.5, 4.0, 1.5)[i % 4]
        r_circ = (4.0, 8.0, 12.0, 6.0)[i // 2 % 4]
        mag = 15.5 + 0.5 * (i % 3)
        gal = galsim.Sersic(n=sersic_n, half_light_radius=r_circ, flux=10 ** (-0.4 * (mag - ZP)))
        gal = gal.shear(q=0.6, beta=30.0 * i * galsim.degrees)
        image = galsim.Convolve(gal, true_psf).drawImage(nx=96, ny=96, scale=1.0).array
        images[f"g{i}"] = image + rng.normal(0.0, 2.0, image.shape)
        truth[f"g{i}"] = (mag, r_circ / np.sqrt(0.6))        # r_e along the major axis
    rows = {}
    for fname, (array, header) in files.items():
        folder = workdir / fname / "stamps"
        folder.mkdir(parents=True, exist_ok=True)
        hdu = fits.PrimaryHDU(array.astype(np.float32))
        for k, v in header.items():
            hdu.header[k] = v
        hdu.writeto(workdir / fname / "psf.fits", overwrite=True)
        for gid, image in images.items():
            h = fits.PrimaryHDU(image.astype(np.float32))
            h.header["MAGZP"], h.header["PIXSCALE"] = ZP, 0.396
            h.writeto(folder / f"{gid}.fits", overwrite=True)
        run(RunConfig(input=str(folder), out=str(workdir / fname / "out"), workers=0, progress=False,
                      mask="sep", init="sep", errors="none", psf=str(workdir / fname / "psf.fits"),
                      overwrite=True),
            stream=io.StringIO())
        cat = Table.read(workdir / fname / "out" / "catalog.fits")
        dm = np.array([r["sersic_mag"] - truth[str(r["id"])][0] for r in cat])
        dr = np.array([np.log10(r["sersic_r_e"] / truth[str(r["id"])][1]) for r in cat])
        said = sorted({str(m) for m in cat["message"] if "PSF's border" in str(m)})
        rows[fname] = {"case": name, "dmag_median": float(np.median(dm)), "dmag_max": float(np.max(np.abs(dm))),
                       "dlogre_median": float(np.median(dr)), "dlogre_max": float(np.max(np.abs(dr))),
                       "flags": sorted({int(f) for f in cat["flags"]}),
                       "said": said[0].split(": ", 1)[-1] if said else ""}
    return rows


def report(record: dict) -> str:
    L = [f"# Fits through PSF files with a pedestal: {record['tag']}", "",
         f"Machine: {record['machine']['cpu']}, torch {record['machine'].get('torch', '')}.  "
         f"`benchmarks/psf_pedestal.py`, {record['n']} galaxies per PSF file (seed {record['seed']}).", "",
         "| PSF file | median Δmag | max abs Δmag | median Δlog r_e | max abs Δlog r_e | flags | the reader said |",
         "|---|---|---|---|---|---|---|"]
    for fname, r in record["rows"].items():
        L.append(f"| {fname} | {r['dmag_median']:+.3f} | {r['dmag_max']:.3f} | {r['dlogre_median']:+.3f} | "
                 f"{r['dlogre_max']:.3f} | {' '.join(map(str, r['flags']))} | {r['said'] or '-'} |")
    L += [""] + [f"- {n}" for n in record.get("notes", [])]
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8, help="galaxies per PSF file")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--cases", nargs="*", default=["moffat", "abdurrouf"])
    ap.add_argument("--workdir", default="/tmp/galmoss_psf_pedestal")
    ap.add_argument("--results", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--tag", default=time.strftime("%Y-%m-%d") + "-vm-cpu-psf-pedestal")
    ap.add_argument("--note", action="append", default=[])
    a = ap.parse_args(argv)
    shared = Path(a.shared) if Path(a.shared).is_dir() else None
    rows = {}
    for name, (true_psf, files) in _psf_cases(shared).items():
        if name in a.cases:
            rows.update(run_case(name, true_psf, files, a.n, a.seed, Path(a.workdir) / name))
    record = {"tag": a.tag, "machine": machine_info("cpu"), "n": a.n, "seed": a.seed, "rows": rows,
              "notes": a.note}
    write_results(a.results, a.tag, record, report(record))
    print(report(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
