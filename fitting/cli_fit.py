"""``galmoss-auto fit``: fit given cutouts from given initial values (no automatic masks/guesses).

    galmoss-auto fit gal1.fits gal2.fits --init init.ecsv --psf psf.fits --sigma-suffix _sigma \\
        --model bulge_disk.yaml --blocks --png --out results/
    galmoss-auto fit --manifest cutouts.csv --init init.fits --out results/
    galmoss-auto fit --model galfit.feedme --out results/      # GALFIT's own image, region, PSF

Inputs
* CUTOUTS: FITS images; the id is the file name without ``.fits``/``.fit``/``.fts`` (and
  ``.gz``/``.bz2``/``.fz``).
  ``--sigma-suffix _sigma`` / ``--mask-suffix _mask`` take ``NAME_sigma.fits`` / ``NAME_mask.fits``
  beside each image.  ``--manifest`` adds rows with columns ``id, image`` and optionally
  ``sigma`` (or ``weight``/``variance``), ``psf``, ``mask``, ``zeropoint``, ``pixel_scale``
  (relative paths are relative to the manifest's folder; empty cells = not given).
* ``--init``: ECSV, CSV or FITS table with ``<component>_<param>`` columns in catalog conventions,
  matched to the cutouts by its ``id`` column, or by order when it has none.  Missing values get
  the feedme's value (with a feedme model), else sep moments of the image spread over the model's
  components by the bulge + disk rule (:func:`galmoss_auto.initnet.bulge_disk.complete_starts`;
  a cutout where sep finds nothing at the centre gets a generic guess and INIT_FALLBACK).
* ``--model``: YAML/TOML model description or GALFIT feedme (see
  :mod:`galmoss_auto.fitting.modelspec`); default one Sérsic named ``sersic``.  A feedme also gives
  initial values and defaults for the zeropoint (J), pixel scale (K), PSF (D) and its sampling
  (E); without CUTOUTS or ``--manifest`` it is fitted on its own image (A), sigma (C), mask (F,
  FITS or GALFIT's ASCII ``x y`` list) and region (H).  Inside a region, positions in the init
  table and in the catalog are in the full image's pixel coordinates, as in GALFIT.

Outputs (in ``--out``): ``catalog.fits`` and ``catalog.ecsv`` (overwritten), and with
``--blocks`` ``blocks/<id>.fits`` (GALFIT-style image blocks), with ``--png`` ``panels/<id>.png``.

Inputs are read by the same reader as ``galmoss-auto run``
(:func:`galmoss_auto.fitting.cutout.read_record`): a cutout's own ``SIGMA``/``WEIGHT``/``VAR``,
``PSF`` and ``MASK`` extensions and its header zero-point, pixel scale and ``SATURATE`` come
before ``--psf``/``--zeropoint``/``--pixel-scale``/``--saturation``, which come before the
feedme's D/J/K.  The catalog's ``psf_source``, ``sigma_source``, ``gain_source``,
``zeropoint_source`` say which was used.  No sigma map: it is estimated from the image as
``run`` does (SIGMA_ESTIMATED; ``sky_level``/``sky_rms`` columns, measured on every cutout;
``sigma_gain`` the gain of its photon-noise term, measured from the pixels where none was
given).  No zero-point anywhere: an
error (exit 2).

The sky: ``fit`` fits the model it is given, so an image that still holds its sky needs a sky
component (``--sky flat|tilted`` adds one, started from the measured background).  Without one,
a cutout whose background lies more than 5 sky RMS from zero
(:func:`~galmoss_auto.fitting.noise.sky_left_in`) is fitted as asked, with a warning and
``SKY_NOT_MODELLED``: the profile absorbs the sky (on blank sky, a Sérsic with r_e of
thousands of pixels).

A cutout that cannot be read, is empty or too small to fit (BAD_INPUT | TOO_FEW_PIXELS) gets a
message naming the file (the sigma file when the sigma is at fault) and a catalog row with NaN
values and Flag.BAD_INPUT; the others are fitted.  Exit status: 0 when at least one galaxy was fitted,
1 when none could be, 2 for unusable options (the message names the file and the problem).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from .catalog import bad_input_rows, merge_in_order, write_catalog
from .cutout import CutoutError, read_record
from .flags import Flag
from .model import default_model, sky_component, with_sky
from .modelspec import ModelSpecError, load_model_file
from .noise import complete_noise, sky_left_in
from .records import InputError, apply_defaults, check_unique, read_manifest

__all__ = ["add_parser", "main", "run", "FitCommandError"]

_IMAGE_RE = re.compile(r"\.(fits|fit)(\.gz)?$", re.IGNORECASE)


class FitCommandError(ValueError):
    """Options or tables that make the whole command unusable; the message names the file."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("cutouts", nargs="*", metavar="CUTOUT",
                   help="FITS images to fit (id = file name without .fits)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--init", default=None, metavar="TABLE",
                   help="initial values: ECSV/CSV/FITS with <component>_<param> columns, matched by "
                        "its id column or by order (default: feedme values, else sep moments of the "
                        "image spread over the model's components by the bulge + disk rule)")
    p.add_argument("--model", default=None, metavar="FILE",
                   help="model.yaml, model.toml or a GALFIT feedme (default: one Sersic 'sersic')")
    p.add_argument("--sky", default="none", choices=["none", "flat", "tilted"],
                   help="add a background component to the model: flat (one level) or tilted (plus "
                        "x/y gradients), started from the background measured off the sources; "
                        "default none: the model as given, and a cutout whose measured background "
                        "lies > 5 sky RMS from 0 while the model has no sky is flagged SKY_NOT_MODELLED")
    p.add_argument("--feedme-version", dest="feedme_version", type=int, choices=[2, 3], default=None,
                   help="GALFIT generation of a feedme whose parameter numbering is ambiguous "
                        "(2: 8) b/a, 9) PA, 10) boxiness; 3: 9) b/a, 10) PA, C0) boxiness); "
                        "default: told from the file")
    p.add_argument("--saturation", type=float, default=None,
                   help="saturation level (image units) where the header has no SATURATE: pixels "
                        "at or above it are masked")
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
                   help="magnitude zeropoint for cutouts whose manifest row and header (MAGZP, ZP, "
                        "...) have none (then the feedme's J); none anywhere is an error")
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
    p.add_argument("--neighbours", default=None, metavar="TABLE",
                   help="neighbours to fit with each target: ECSV/CSV/FITS with id, kind (galaxy|star), "
                        "x, y, mag [, r_e, n, q, pa]; their fits go to neighbours.fits/.ecsv "
                        "(see galmoss_auto.fitting.neighbours)")
    p.add_argument("--residual-search", dest="residual_search", action="store_true",
                   help="after the fit, look in each residual for one source the model missed "
                        "(lopsided, >= 4 sigma after PSF filtering and above the galaxy's own "
                        "structure), fit it as an extra Sersic "
                        "neighbour and keep it where chi2 drops by > 25; found sources go to "
                        "neighbours.fits/.ecsv with origin 'residual'")
    p.add_argument("--centred", action="store_true",
                   help="the cutouts are centred on their targets (survey stamps), as run assumes: a "
                        "target fitted > max(5 px, 1 PSF FWHM) off the centre, with the centre outside its "
                        "half-light ellipse, trades places with a Sersic neighbour fitted at the centre "
                        "(flag CENTRE_SWAPPED) or is flagged CENTRE_OFFSET")


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


def _load_model(path, feedme_version=None):
    """``load_model_file``, passing ``--feedme-version`` when given."""
    return load_model_file(path, feedme_version=None if feedme_version is None else int(feedme_version))


def run_args(args, stream=None) -> int:
    err = sys.stderr if stream is None else stream
    try:
        return run(args, stream=err)
    except (FitCommandError, ModelSpecError, CutoutError, InputError) as exc:
        print(f"galmoss-auto fit: error: {exc}", file=err)
        return 2


# ---------------------------------------------------------------------------------------------
def _stem(path: str) -> str:
    return _IMAGE_RE.sub("", Path(path).name)


def _companion(image: str, suffix: str) -> str:
    p = Path(image)
    ext = p.name[len(_stem(image)):]
    return str(p.with_name(_stem(image) + suffix + ext))


def _read_table(path, what: str):
    """An astropy Table from ECSV/CSV/FITS; ids stay text.  Errors name the file."""
    from .records import InputError, read_table
    try:
        return read_table(path, what)
    except InputError as exc:
        raise FitCommandError(str(exc)) from None


def _records(args, options: dict) -> tuple[list[dict], tuple | None]:
    """Every galaxy to fit, in order, plus the feedme region when its own image is fitted.
    Records as :mod:`galmoss_auto.fitting.records` makes them (the reader ``run`` uses)."""
    records = []
    for text in args.cutouts:
        records.append({"id": _stem(text), "image": text, "sources": {}})
    if args.manifest:
        try:
            records.extend(read_manifest(args.manifest))
        except InputError as exc:
            raise FitCommandError(str(exc)) from None
    region = None
    if not records and options.get("image"):
        # the feedme fitted on its own data, like `galfit file.feedme`
        rec = {"id": _stem(options["image"]), "image": options["image"], "sources": {}}
        for key in ("sigma", "mask"):
            if options.get(key):
                rec[key] = options[key]
                rec["sources"][key] = "feedme"
        records.append(rec)
        region = options.get("region")
    elif options.get("region"):
        print("galmoss-auto fit: note: the feedme's region (H) applies to its own image only; "
              "the given cutouts are fitted whole", file=sys.stderr)
    if not records:
        raise FitCommandError("no cutouts: give FITS files, --manifest, or a feedme --model with an image (A)")
    try:
        check_unique(records, "cutouts")
    except InputError as exc:
        raise FitCommandError(f"cutout ids must be unique (file names without .fits): {exc}") from None
    for rec in records:
        if args.sigma_suffix and not any(k in rec for k in ("sigma", "weight", "variance")):
            rec["sigma"] = _companion(rec["image"], args.sigma_suffix)
            rec["sources"]["sigma"] = "file"
        if args.mask_suffix and "mask" not in rec:
            rec["mask"] = _companion(rec["image"], args.mask_suffix)
            rec["sources"]["mask"] = "file"
        if rec.get("psf_oversampling") is None:
            rec["psf_oversampling"] = args.psf_oversampling or options.get("psf_oversampling") or 1
    # command-line options first, then the feedme: each used only where the row, the image's
    # extensions and its header give nothing (the rule of `run`)
    apply_defaults(records, {"psf": args.psf, "zeropoint": args.zeropoint,
                             "pixel_scale": args.pixel_scale,
                             "saturation": getattr(args, "saturation", None)}, "option")
    apply_defaults(records, {k: options.get(k) for k in ("psf", "zeropoint", "pixel_scale")},
                   "feedme")
    return records, region


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


def _measure_sky(cut) -> dict:
    """The sky of a cutout that has its own sigma map; a sky that cannot be measured (too few
    pixels) leaves it unmeasured, as the fit needs only the sigma."""
    try:
        return complete_noise(cut)
    except CutoutError:
        return {}


def _safe(gid: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in gid)


def run(args, stream=None) -> int:
    """Do the work of ``galmoss-auto fit`` for parsed ``args``; returns the exit status."""
    from .api import fit, model_images

    err = sys.stderr if stream is None else stream
    if args.model:
        model, feed_init, options = _load_model(args.model, getattr(args, "feedme_version", None))
    else:
        model, feed_init, options = default_model(), {}, {}
    model = with_sky(model, getattr(args, "sky", "none") or "none")
    sky_comp = sky_component(model)
    records, region = _records(args, options)
    ids = [r["id"] for r in records]
    init = read_init(args.init, ids, model, feed_init)
    if region is not None:
        _shift_positions(init, model, 1 - region[0], 1 - region[2])

    good, messages, bad_flags, extra, notes = [], {}, {}, {}, {}
    for rec in records:
        try:
            cut = read_record(rec, region)
            # the sky is measured on every cutout (a fitted sky's start, the check below); no
            # sigma map: estimated from the image exactly as `run` does (SIGMA_ESTIMATED)
            cols = complete_noise(cut) if cut.sigma is None else _measure_sky(cut)
        except CutoutError as exc:
            messages[rec["id"]] = str(exc)
            bad_flags[rec["id"]] = exc.flags
            print(f"galmoss-auto fit: {rec['id']}: unusable input, flagged BAD_INPUT: {exc}", file=err)
            continue
        good.append(cut)
        if cut.meta.get("psf_note"):  # what was done to the PSF (resampled, PSFEx position)
            notes[cut.id] = cut.meta["psf_note"]
        sky = cut.meta.get("sky")
        if sky_comp is None and sky is not None and sky_left_in(sky):
            cut.flags = int(cut.flags) | int(Flag.SKY_NOT_MODELLED)
            print(f"galmoss-auto fit: {rec['id']}: warning: {cut.source}: the background measured "
                  f"off the sources is {sky.level:.4g} ({sky.level / sky.rms:.1f} sky RMS from 0) "
                  "and the model has no sky component, so the profile absorbs the sky; flagged "
                  "SKY_NOT_MODELLED (--sky flat, or a sky component in the model, fits it)", file=err)
        src = cut.meta.get("sources", {})
        extra[cut.id] = {"psf_source": src.get("psf", "none"), "sigma_source": src.get("sigma", "none"),
                         "gain_source": src.get("gain", "none"), "sigma_gain": cols.get("sigma_gain", np.nan),
                         "zeropoint_source": src.get("zeropoint", "none"),
                         "n_saturated": int(cut.meta.get("n_saturated", 0)),
                         "sky_level": cols.get("sky_level", np.nan), "sky_rms": cols.get("sky_rms", np.nan)}
    missing_zp = [c for c in good if c.flags & Flag.NO_ZEROPOINT]
    if missing_zp:
        names = ", ".join(c.source for c in missing_zp[:5]) + (" ..." if len(missing_zp) > 5 else "")
        raise FitCommandError(f"no zero-point for {len(missing_zp)} cutout(s) ({names}): none in "
                              "the manifest, the image header (MAGZP, ZP, ...) or the feedme (J); "
                              "give --zeropoint")
    index = {i: k for k, i in enumerate(ids)}
    rows = [index[c.id] for c in good]
    starts = {k: v[rows] for k, v in init.items()}
    if sky_comp is not None and good:
        # a fitted sky the init table and the feedme leave open starts at the measured background
        column = f"{sky_comp.name}_sky"
        measured = np.array([getattr(c.meta.get("sky"), "level", np.nan) for c in good], np.float64)
        starts[column] = np.where(np.isfinite(starts[column]), starts[column], measured)
    if good:
        # values neither --init nor the feedme gives: sep moments of the image, spread over the
        # model's components by the bulge + disk rule (76 % of bulge + disk fits fail from the
        # fitter's generic guess, 35 % from these; initnet.bulge_disk)
        from galmoss_auto.initnet.bulge_disk import complete_starts
        starts, start_flags = complete_starts(model, starts, good)
        for cut, f in zip(good, start_flags):
            cut.flags |= int(f)
    kwargs = {"method": args.method, "errors": args.errors, "device": args.device}
    if args.batch_size is not None:
        kwargs["batch_size"] = args.batch_size
    tables = []
    fitted = None
    if good:
        if (getattr(args, "neighbours", None) or getattr(args, "residual_search", False)
                or getattr(args, "centred", False)):
            fitted, nb_table = _fit_neighbours(getattr(args, "neighbours", None), good,
                                               starts, model, region, kwargs,
                                               search=getattr(args, "residual_search", False),
                                               centred=getattr(args, "centred", False))
        else:
            fitted = fit(good, starts, model, **kwargs)
        tables.append(fitted)
    bad_ids = [i for i in ids if i in messages]
    if bad_ids:
        scales = [next((r.get("pixel_scale") for r in records if r["id"] == i), None) for i in bad_ids]
        rows = bad_input_rows(model, bad_ids, scales)
        rows["flags"] = np.array([bad_flags[i] | int(Flag.BAD_INPUT) for i in bad_ids], rows["flags"].dtype)
        tables.append(rows)
    catalog = merge_in_order(tables, ids)
    for col, empty in (("psf_source", "none"), ("sigma_source", "none"), ("gain_source", "none"),
                       ("sigma_gain", np.nan), ("zeropoint_source", "none"),
                       ("n_saturated", 0), ("sky_level", np.nan), ("sky_rms", np.nan)):
        catalog[col] = [extra.get(str(i), {}).get(col, empty) for i in catalog["id"]]
    catalog["message"] = [messages.get(str(i), notes.get(str(i), "")) for i in catalog["id"]]
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
    if (getattr(args, "neighbours", None) or getattr(args, "residual_search", False)) and fitted is not None:
        nb_fits, _ = write_catalog(nb_table, out / "neighbours")
        print(f"galmoss-auto fit: {len(nb_table)} neighbours fitted; table: {nb_fits}", file=err)
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


def _fit_neighbours(path, good, init, model, region, kwargs, search: bool = False, centred: bool = False):
    """``--neighbours TABLE``, ``--residual-search`` and/or ``--centred``: fit each cutout's listed
    neighbours (none without a table) with its target, searching the residuals with ``search``,
    checking the target is at the centre with ``centred``
    (:func:`galmoss_auto.fitting.neighbours.fit_with_neighbours`); positions in a feedme region
    are in the full image's pixels, as the init table's."""
    from .neighbours import fit_with_neighbours, neighbours_from_table

    if path is None:
        lists = [[] for _ in good]
    else:
        table = _read_table(path, "neighbour table")
        try:
            lists = neighbours_from_table(table, [c.id for c in good])
        except ValueError as exc:
            raise FitCommandError(f"{path}: {exc}") from None
    if region is not None:
        for lst in lists:
            for nb in lst:
                nb["x"] += 1 - region[0]
                nb["y"] += 1 - region[2]
    fitted, nb_table = fit_with_neighbours(good, init, lists, model, search=search, centred=centred, **kwargs)
    if region is not None and len(nb_table):
        nb_table["x"] += (region[0] - 1) * nb_table["x"].unit
        nb_table["y"] += (region[2] - 1) * nb_table["y"].unit
    return fitted, nb_table


if __name__ == "__main__":
    sys.exit(main())
