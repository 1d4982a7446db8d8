"""Writing a simulation's products: per-galaxy FITS files like real survey cutouts, and the
truth, per-object and manifest tables (astropy Tables with units, as ECSV plus FITS or CSV).

Shards: see :mod:`galmoss_auto.data_scripts.shards` for the layout.

Per-galaxy FITS (``cutouts/<id>.fits``): primary HDU = image (header ZP, MAGZP, PIXSCALE,
GAIN, SURVEY, BAND, BUNIT), then extensions SIGMA, PSF, SEG (segmentation) and MODEL (noiseless).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

__all__ = ["COMPONENTS", "PARAMS", "ARRAYS", "write_cutout_fits", "truth_table", "objects_table",
           "manifest_table", "write_table", "write_shard", "read_shard"]

PARAMS = ("x", "y", "mag", "r_e", "r_e_arcsec", "n", "q", "pa")
COMPONENTS = {"sersic": ("sersic",), "bulge_disk": ("bulge", "disk"),
              "mixed": ("sersic", "bulge", "disk")}
_UNITS = {"x": u.pix, "y": u.pix, "mag": u.mag, "r_e": u.pix, "r_e_arcsec": u.arcsec,
          "pa": u.deg, "psf_fwhm": u.arcsec, "total_mag": u.mag}


def _unit(col: str):
    for key, unit in _UNITS.items():
        if col == key or col.endswith("_" + key):
            return unit
    return None


def write_cutout_fits(path: Path, result: dict, header: dict) -> None:
    """One multi-extension FITS file per cutout (see module docstring)."""
    from astropy.io import fits

    primary = fits.PrimaryHDU(result["image"])
    for key, value in header.items():
        primary.header[key] = value
    primary.header["EXTNAME"] = "IMAGE"
    hdus = [primary,
            fits.ImageHDU(result["sigma"], name="SIGMA"),
            fits.ImageHDU(result["psf"], name="PSF"),
            fits.ImageHDU(result["segmentation"], name="SEG"),
            fits.ImageHDU(result["noiseless"], name="MODEL")]
    hdus[3].header["COMMENT"] = "0 sky, 1 central galaxy, 2.. contaminants (see objects.ecsv)"
    tmp = path.with_suffix(".tmp")
    fits.HDUList(hdus).writeto(tmp, overwrite=True)
    tmp.replace(path)


def truth_table(rows: list[dict], population: str, meta: dict) -> Table:
    """One row per cutout for its central galaxy, in catalog conventions: id,
    <comp>_<param> for the population's components (NaN where a component is absent), total_mag,
    bt, psf_fwhm (arcsec), sky_sigma (image units), n_contaminants, ..."""
    comps = COMPONENTS[population]
    cols = ["id", "model"] + [f"{c}_{p}" for c in comps for p in PARAMS]
    extra = ["total_mag", "bt", "substructure", "substructure_frac", "psf_fwhm", "psf_e1", "psf_e2",
             "psf_source", "sky_sigma", "sky_level", "n_contaminants", "index"]
    data = {c: [r.get(c, math.nan) for r in rows] for c in cols + extra}
    table = Table(data, meta=dict(meta))
    for c in table.colnames:
        unit = _unit(c)
        if unit is not None:
            table[c].unit = unit
    return table


def objects_table(rows: list[dict], meta: dict) -> Table:
    """Every object of every cutout: id (cutout), label (value in the segmentation map), kind
    (central, galaxy, blend, star, bright_star, bad_column, cosmic_ray), x, y, mag, r_e, n, q, pa, bt,
    npix (its pixels in the segmentation map)."""
    cols = ["id", "label", "kind", "x", "y", "mag", "r_e", "r_e_arcsec", "n", "q", "pa", "bt", "npix"]
    table = Table({c: [r.get(c, math.nan) for r in rows] for c in cols}, meta=dict(meta))
    for c in cols:
        unit = _unit(c)
        if unit is not None:
            table[c].unit = unit
    table["label"] = np.asarray(table["label"], np.int32)
    table["npix"] = np.asarray(table["npix"], np.int64)
    return table


def manifest_table(rows: list[dict], meta: dict) -> Table:
    """What ``galmoss-auto run`` reads: id, image, sigma, psf, mask (empty), segmentation,
    zeropoint, pixel_scale, gain, plus shard / shard_index when shards were written."""
    cols = ["id", "image", "sigma", "psf", "mask", "segmentation", "model", "zeropoint",
            "pixel_scale", "gain", "shard", "shard_index"]
    table = Table({c: [r.get(c, "") for r in rows] for c in cols}, meta=dict(meta))
    table["pixel_scale"].unit = u.arcsec / u.pix
    return table


def write_table(table: Table, path: Path, also: str | None) -> None:
    """Write ``table`` as ECSV at ``path`` and, when ``also`` is "fits" or "csv", beside it."""
    table.write(path, format="ascii.ecsv", overwrite=True)
    if also == "fits":
        clean = table.copy(copy_data=False)
        clean.meta = {}  # the run's settings live in the ECSV header and run.json
        clean.write(path.with_suffix(".fits"), overwrite=True)
    elif also == "csv":
        table.write(path.with_suffix(".csv"), format="ascii.csv", overwrite=True)


ARRAYS = ("image", "sigma", "psf", "noiseless", "segmentation")


def _column(values: list):
    if all(isinstance(v, (int, float, np.integer, np.floating, bool)) for v in values):
        return np.asarray(values, np.float64)
    return np.asarray(["" if (isinstance(v, float) and math.isnan(v)) else str(v) for v in values])


def write_shard(path: Path, results: list[dict]) -> None:
    """Stack ``results`` (from ``simulate_one``) into one uncompressed .npz at ``path``."""
    arrays = {name: np.stack([r[name] for r in results]) for name in ARRAYS}
    arrays["id"] = np.asarray([r["id"] for r in results])
    arrays["index"] = np.asarray([r["index"] for r in results], np.int64)
    keys = list(dict.fromkeys(k for r in results for k in r["truth"]))
    for key in keys:
        arrays[f"truth_{key}"] = _column([r["truth"].get(key, math.nan) for r in results])
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def read_shard(path) -> dict:
    """All arrays of one shard as a dict (loaded into memory; a shard is ~30 MB for 128 x 128 x 128)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: shard not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a readable shard ({exc})") from None
