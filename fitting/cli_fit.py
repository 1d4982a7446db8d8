"""``galmoss-auto fit``: fit given cutouts from given initial values (no automatic masks/guesses).

    galmoss-auto fit gal1.fits gal2.fits --init init.ecsv --psf psf.fits --sigma-suffix _sigma \\
        --model bulge_disk.yaml --blocks --png --out results/
    galmoss-auto fit --manifest cutouts.csv --init init.fits --out results/
    galmoss-auto fit --model galfit.feedme --out results/      # GALFIT's own image, region, PSF

Inputs
* CUTOUTS: FITS images; the id is the file name without ``.fits``/``.fit``/``.fits.gz``.
  ``--sigma-suffix _sigma`` / ``--mask-suffix _mask`` take ``NAME_sigma.fits`` / ``NAME_mask.fits``
  beside each image.  ``--manifest`` adds rows with columns ``id, image`` and optionally
  ``sigma`` (or ``weight``/``variance``), ``psf``, ``mask``, ``zeropoint``, ``pixel_scale``
  (relative paths are relative to the manifest's folder; empty cells = not given).
* ``--init``: ECSV, CSV or FITS table with ``<component>_<param>`` columns in catalog conventions,
  matched to the cutouts by its ``id`` column, or by order when it has none.  Missing values get
  the feedme's value (with a feedme model) or a guess from the image.
* ``--model``: YAML/TOML model description or GALFIT feedme (see
  :mod:`galmoss_auto.fitting.modelspec`); default one Sérsic named ``sersic``.  A feedme also gives
  initial values and defaults for the zeropoint (J), pixel scale (K), PSF (D) and its sampling
  (E); without CUTOUTS or ``--manifest`` it is fitted on its own image (A), sigma (C), mask (F,
  FITS or GALFIT's ASCII ``x y`` list) and region (H).  Inside a region, positions in the init
  table and in the catalog are in the full image's pixel coordinates, as in GALFIT.

Outputs (in ``--out``): ``catalog.fits`` and ``catalog.ecsv`` (overwritten), and with
``--blocks`` ``blocks/<id>.fits`` (GALFIT-style image blocks), with ``--png`` ``panels/<id>.png``.

A cutout that cannot be read gets a message naming the file and a catalog row with NaN values
and Flag.BAD_INPUT; the others are fitted.  Exit status: 0 when at least one galaxy was fitted,
1 when none could be, 2 for unusable options (the message names the file and the problem).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from .catalog import bad_input_rows, merge_in_order, write_catalog
from .cutout import Cutout, CutoutError, normalise_psf, read_cutout, read_fits_array
from .flags import Flag
from .model import default_model
from .modelspec import ModelSpecError, load_model_file

__all__ = ["add_parser", "main", "run", "FitCommandError"]

_IMAGE_RE = re.compile(r"\.(fits|fit)(\.gz)?$", re.IGNORECASE)
_MANIFEST_PATHS = ("image", "sigma", "weight", "variance", "psf", "mask")
_MANIFEST_NUMBERS = ("zeropoint", "pixel_scale")
#: header keywords read_cutout takes the zeropoint from (used for region crops too)
_ZP_KEYS = ("MAGZP", "ZP", "MAGZERO", "ZEROPT")


class FitCommandError(ValueError):
    """Options or tables that make the whole command unusable; the message names the file."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cutouts", nargs="*", metavar="CUTOUT",
                   help="FITS images to fit (id = file name without .fits)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--init", default=None, metavar="TABLE",
                   help="initial values: ECSV/CSV/FITS with <component>_<param> columns, matched by "
                        "its id column or by order (default: feedme values or guesses from the image)")
    p.add_argument("--model", default=None, metavar="FILE",
                   help="model.yaml, model.toml or a GALFIT feedme (default: one Sersic 'sersic')")
    p.add_argument("--manifest", default=None, metavar="TABLE",
                   help="table with columns id,image[,sigma|weight|variance,psf,mask,zeropoint,pixel_scale]")
    p.add_argument("--sigma-suffix", dest="sigma_suffix", default=None, metavar="SUFFIX",
                   help="sigma map beside each image: NAME<SUFFIX>.fits (e.g. _sigma)")
    p.add_argument("--mask-suffix", dest="mask_suffix", default=None, metavar="SUFFIX",
                   help="mask beside each image: NAME<SUFFIX>.fits (nonzero = bad)")
    p.add_argument("--psf", default=None, metavar="FILE", help="PSF for every cutout without its own")
    p.add_argument("--psf-oversampling", dest="psf_oversampling", type=int, default=None,
                   help="PSF pixels per image pixel along a side (default 1, or the feedme's E)")
    p.add_argument("--zeropoint", type=float, default=None,
                   help="magnitude zeropoint (default: manifest, feedme J, header MAGZP/ZP, else 0)")
    p.add_argument("--pixel-scale", dest="pixel_scale", type=float, default=None,
                   help="arcsec per pixel (adds _arcsec columns)")
    p.add_argument("--method", default="lm", choices=["lm", "adam"], help="solver (default lm)")
    p.add_argument("--errors", default="covariance", choices=["covariance", "bootstrap", "none"],
                   help="parameter errors (default covariance)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None,
                   help="galaxies per fitter batch (default: the fitter's)")
    p.add_argument("--blocks", action="store_true", help="write blocks/<id>.fits image blocks")
    p.add_argument("--png", action="store_true", help="write panels/<id>.png (data, model, residual, profile)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``fit`` on the ``galmoss-auto`` command's subparsers."""
    p = subparsers.add_parser(
        "fit", help="fit cutouts with given masks and initial values",
        description="Fit a model to FITS cutouts from given initial values; write the catalog "
                    "(and optionally image blocks and PNG panels).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run_args)
    return p


def main(argv=None) -> int:
    """``galmoss-auto fit`` as a function: returns the exit status."""
    parser = argparse.ArgumentParser(prog="galmoss-auto fit",
                                     description="Fit a model to FITS cutouts from given initial values.")
    add_arguments(parser)
    return run_args(parser.parse_args(argv))


def run_args(args, stream=None) -> int:
    err = sys.stderr if stream is None else stream
    try:
        return run(args, stream=err)
    except (FitCommandError, ModelSpecError, CutoutError) as exc:
        print(f"galmoss-auto fit: error: {exc}", file=err)
        return 2


# ---------------------------------------------------------------------------------------------
def _stem(path: str) -> str:
    return _IMAGE_RE.sub("", Path(path).name)


def _companion(image: str, suffix: str) -> str:
    p = Path(image)
    ext = p.name[len(_stem(image)):]
    return str(p.with_name(_stem(image) + suffix + ext))


def _blank(value) -> bool:
    if value is None or np.ma.is_masked(value):
        return True
    if isinstance(value, (str, bytes)):
        return str(value).strip() == ""
    try:
        return bool(np.isnan(float(value)))
    except (TypeError, ValueError):
        return False


def _read_table(path, what: str):
    """An astropy Table from ECSV/CSV/FITS; ids stay text.  Errors name the file."""
    from astropy.table import Table

    path = Path(path)
    if not path.is_file():
        raise FitCommandError(f"{path}: {what} not found")
    try:
        if path.suffix.lower() == ".csv":
            from astropy.io.ascii import convert_numpy
            return Table.read(path, format="ascii.csv", converters={"id": [convert_numpy(str)]})
        if path.suffix.lower() == ".ecsv":
            return Table.read(path, format="ascii.ecsv")
        return Table.read(path)
    except Exception as exc:  # astropy raises many types for unreadable tables
        raise FitCommandError(f"{path}: cannot read the {what} ({type(exc).__name__}: {exc})") from None


def read_manifest(path) -> list[dict]:
    """Records (id, image, ...) from a manifest table; relative paths from its folder."""
    table = _read_table(path, "manifest")
    path = Path(path)
    missing = [c for c in ("id", "image") if c not in table.colnames]
    if missing:
        raise FitCommandError(f"{path}: manifest lacks column(s) {missing}; it has {table.colnames}")
    records = []
    for i, row in enumerate(table, 1):
        if _blank(row["id"]) or _blank(row["image"]):
            raise FitCommandError(f"{path}: row {i} has an empty id or image")
        rec = {"id": str(row["id"]).strip()}
        for key in _MANIFEST_PATHS:
            if key in table.colnames and not _blank(row[key]):
                p = Path(str(row[key]).strip())
                rec[key] = str(p if p.is_absolute() else path.parent / p)
        for key in _MANIFEST_NUMBERS:
            if key in table.colnames and not _blank(row[key]):
                try:
                    rec[key] = float(row[key])
                except (TypeError, ValueError):
                    raise FitCommandError(f"{path}: row {i}: {key} = {row[key]!r} is not a number") from None
        records.append(rec)
    return records


def _records(args, options: dict) -> tuple[list[dict], tuple | None]:
    """Every galaxy to fit, in order, plus the feedme region when its own image is fitted."""
    records = []
    for text in args.cutouts:
        records.append({"id": _stem(text), "image": text})
    if args.manifest:
        records.extend(read_manifest(args.manifest))
    region = None
    if not records and options.get("image"):
        # the feedme fitted on its own data, like `galfit file.feedme`
        rec = {"id": _stem(options["image"]), "image": options["image"]}
        for key in ("sigma", "mask"):
            if options.get(key):
                rec[key] = options[key]
        records.append(rec)
        region = options.get("region")
    elif options.get("region"):
        print("galmoss-auto fit: note: the feedme's region (H) applies to its own image only; "
              "the given cutouts are fitted whole", file=sys.stderr)
    if not records:
        raise FitCommandError("no cutouts: give FITS files, --manifest, or a feedme --model with an image (A)")
    seen, dups = set(), []
    for rec in records:
        (dups.append(rec["id"]) if rec["id"] in seen else seen.add(rec["id"]))
    if dups:
        raise FitCommandError(f"cutout ids must be unique (file names without .fits); repeated: {dups[:10]}")
    for rec in records:
        if args.sigma_suffix and not any(k in rec for k in ("sigma", "weight", "variance")):
            rec["sigma"] = _companion(rec["image"], args.sigma_suffix)
        if args.mask_suffix and "mask" not in rec:
            rec["mask"] = _companion(rec["image"], args.mask_suffix)
        defaults = {"psf": args.psf or options.get("psf"),
                    "zeropoint": args.zeropoint if args.zeropoint is not None else options.get("zeropoint"),
                    "pixel_scale": args.pixel_scale if args.pixel_scale is not None else options.get("pixel_scale"),
                    "psf_oversampling": args.psf_oversampling or options.get("psf_oversampling") or 1}
        for key, value in defaults.items():
            if rec.get(key) is None and value is not None:
                rec[key] = value
    return records, region


def _ascii_mask(path: str, shape) -> np.ndarray:
    """GALFIT's text bad-pixel list: one ``x y`` (1-based) per line -> bool mask."""
    try:
        xy = np.loadtxt(path, comments="#", ndmin=2)
    except (OSError, ValueError) as exc:
        raise CutoutError(f"{path}: cannot read the mask as FITS or as an 'x y' list ({exc})") from None
    mask = np.zeros(shape, bool)
    if xy.size:
        if xy.shape[1] < 2:
            raise CutoutError(f"{path}: mask list needs two columns x y, got {xy.shape[1]}")
        x, y = np.rint(xy[:, 0]).astype(int) - 1, np.rint(xy[:, 1]).astype(int) - 1
        ok = (x >= 0) & (x < shape[1]) & (y >= 0) & (y < shape[0])
        mask[y[ok], x[ok]] = True
    return mask


def read_record(rec: dict, region=None) -> Cutout:
    """One record -> Cutout (raises CutoutError naming the file).  ``region`` = GALFIT's H)
    (xmin, xmax, ymin, ymax), 1-based inclusive: the cutout is that part of the image."""
    mask = rec.get("mask")
    mask_is_text = mask is not None and not _IMAGE_RE.search(str(mask).split("[")[0])
    if region is None and not mask_is_text:
        return read_cutout(rec["image"], id=rec["id"], sigma=rec.get("sigma"), weight=rec.get("weight"),
                           variance=rec.get("variance"), psf=rec.get("psf"), mask=mask,
                           zeropoint=rec.get("zeropoint"), pixel_scale=rec.get("pixel_scale"),
                           psf_oversampling=int(rec.get("psf_oversampling", 1)))
    # read the planes, cut the region, then validate: masks and bad-pixel counts stay exact
    image, header = read_fits_array(rec["image"], what="image")
    planes = {"image": image}
    for key in ("sigma", "weight", "variance"):
        if rec.get(key):
            planes[key] = read_fits_array(rec[key], what=key)[0]
    if mask is not None:
        planes["mask"] = _ascii_mask(mask, image.shape) if mask_is_text else read_fits_array(mask, what="mask")[0]
    for key, arr in planes.items():
        if arr.shape != image.shape:
            raise CutoutError(f"{rec[key]}: {key} shape {arr.shape} differs from image shape {image.shape}")
    if region is not None:
        x0, x1, y0, y1 = region
        if x1 > image.shape[1] or y1 > image.shape[0]:
            raise CutoutError(f"{rec['image']}: region (H) {region} exceeds the image "
                              f"({image.shape[1]} x {image.shape[0]} pixels)")
        planes = {k: v[y0 - 1:y1, x0 - 1:x1] for k, v in planes.items()}
    zp = rec.get("zeropoint")
    if zp is None:
        zp = next((float(header[k]) for k in _ZP_KEYS if k in header), 0.0)
    scale = rec.get("pixel_scale", header.get("PIXSCALE"))
    with np.errstate(divide="ignore", invalid="ignore"):
        if "weight" in planes:
            sigma = np.where(planes["weight"] > 0, 1.0 / np.sqrt(np.abs(planes["weight"])), np.nan)
        elif "variance" in planes:
            sigma = np.where(planes["variance"] > 0, np.sqrt(np.abs(planes["variance"])), np.nan)
        else:
            sigma = planes.get("sigma")
    psf = normalise_psf(read_fits_array(rec["psf"], what="psf")[0], rec["psf"]) if rec.get("psf") else None
    # Cutout validates (NaN/bad-sigma pixels masked and counted, PSF normalised); source names the file
    return Cutout(id=rec["id"], image=planes["image"], sigma=sigma, psf=psf, mask=planes.get("mask"),
                  zeropoint=float(zp), pixel_scale=None if scale is None else float(scale),
                  psf_oversampling=int(rec.get("psf_oversampling", 1)), source=str(rec["image"]))


def read_init(path, ids: list[str], model, defaults: dict) -> dict:
    """Init columns for ``model``, one value per id (NaN where unknown), from the table at
    ``path`` (matched by ``id`` or order) and then ``defaults`` (column -> value)."""
    names = [c for c, _, _ in model.catalog_columns]
    cols = {n: np.full(len(ids), np.nan) for n in names}
    if path is not None:
        table = _read_table(path, "initial-value table")
        usable = [n for n in names if n in table.colnames]
        if not usable:
            print(f"galmoss-auto fit: warning: {path} has none of the model's columns "
                  f"({', '.join(names)}); initial values come from elsewhere", file=sys.stderr)
        if "id" in table.colnames:
            where = {str(v).strip(): k for k, v in enumerate(table["id"])}
            missing = [i for i in ids if i not in where]
            if missing:
                print(f"galmoss-auto fit: warning: {path} has no row for id(s) {missing[:10]}; "
                      "their initial values come from elsewhere", file=sys.stderr)
            rows = np.array([where.get(i, -1) for i in ids])
        else:
            if len(table) != len(ids):
                raise FitCommandError(f"{path}: no id column and {len(table)} rows for {len(ids)} cutouts")
            rows = np.arange(len(ids))
        for n in usable:
            col = table[n]
            values = np.ma.filled(np.ma.asarray(getattr(col, "value", col), dtype=float), np.nan)
            have = rows >= 0
            cols[n][have] = values[rows[have]]
    for n, value in defaults.items():
        if n in cols:
            cols[n] = np.where(np.isfinite(cols[n]), cols[n], float(value))
    return cols


def _shift_positions(table_or_cols, model, dx: float, dy: float) -> None:
    """Add (dx, dy) to every x / y column (region offsets), in place."""
    present = set(getattr(table_or_cols, "colnames", table_or_cols))
    for column, _, spec in model.catalog_columns:
        if spec.kind == "position" and column in present:
            shift = dx if spec.name == "x" else dy
            table_or_cols[column][...] += shift


def _safe(gid: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in gid)


def run(args, stream=None) -> int:
    """Do the work of ``galmoss-auto fit`` for parsed ``args``; returns the exit status."""
    from .api import fit, model_images

    err = sys.stderr if stream is None else stream
    if args.model:
        model, feed_init, options = load_model_file(args.model)
    else:
        model, feed_init, options = default_model(), {}, {}
    records, region = _records(args, options)
    ids = [r["id"] for r in records]
    init = read_init(args.init, ids, model, feed_init)
    if region is not None:
        _shift_positions(init, model, 1 - region[0], 1 - region[2])

    good, messages = [], {}
    for rec in records:
        try:
            good.append(read_record(rec, region))
        except CutoutError as exc:
            messages[rec["id"]] = str(exc)
            print(f"galmoss-auto fit: {rec['id']}: unusable input, flagged BAD_INPUT: {exc}", file=err)
    index = {i: k for k, i in enumerate(ids)}
    rows = [index[c.id] for c in good]
    kwargs = {"method": args.method, "errors": args.errors, "device": args.device}
    if args.batch_size is not None:
        kwargs["batch_size"] = args.batch_size
    tables = []
    fitted = None
    if good:
        fitted = fit(good, {k: v[rows] for k, v in init.items()}, model, **kwargs)
        tables.append(fitted)
    bad_ids = [i for i in ids if i in messages]
    if bad_ids:
        scales = [next((r.get("pixel_scale") for r in records if r["id"] == i), None) for i in bad_ids]
        tables.append(bad_input_rows(model, bad_ids, scales))
    catalog = merge_in_order(tables, ids)
    if messages:
        catalog.meta["BADINPUT"] = "; ".join(f"{i}: {m}" for i, m in messages.items())
    if args.model:
        catalog.meta["MODEL"] = str(args.model)

    out = Path(args.out)
    images = []
    if fitted is not None and (args.blocks or args.png):
        images = model_images(good, fitted, model, device=args.device)
    if region is not None:
        _shift_positions(catalog, model, region[0] - 1, region[2] - 1)
    fits_path, ecsv_path = write_catalog(catalog, out / "catalog")
    by_id = {str(r["id"]): r for r in catalog}
    fit_rows = {str(r["id"]): r for r in fitted} if fitted is not None else {}
    for c, imgs in zip(good, images):
        if int(by_id[c.id]["flags"]) & int(Flag.FIT_FAILED):
            continue  # no parameters to draw
        if args.blocks:
            from .blocks import write_image_blocks
            write_image_blocks(out / "blocks" / f"{_safe(c.id)}.fits", imgs, by_id[c.id], model=model)
        if args.png:
            from .blocks import plot_panel
            plot_panel(out / "panels" / f"{_safe(c.id)}.png", imgs, fit_rows[c.id])
    n_flagged = int(np.count_nonzero(np.asarray(catalog["flags"]) != 0))
    print(f"galmoss-auto fit: {len(ids)} galaxies, {len(good)} fitted, {len(bad_ids)} unusable, "
          f"{n_flagged} with flags; catalog: {fits_path} (and {ecsv_path})")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
