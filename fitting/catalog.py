"""The output catalog: an astropy Table with units, in GALFIT's conventions.

Columns, in order: ``id``; for every component and parameter ``<component>_<param>`` and
``<component>_<param>_err`` (lengths also ``_arcsec`` and ``_arcsec_err`` where the pixel scale
is known, NaN otherwise); then ``chi2_nu``, ``n_iter``, ``flags`` (see
:class:`~galmoss_auto.fitting.flags.Flag`) and ``n_bad_pixels``.  Written as FITS and ECSV.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table, vstack

from .flags import Flag

__all__ = ["build_catalog", "bad_input_rows", "write_catalog", "merge_in_order"]


def _unit(spec_unit: str):
    return u.Unit(spec_unit) if spec_unit else None


def build_catalog(model, ids, values: dict, errors: dict | None, chi2_nu, n_iter, flags,
                  n_bad_pixels, pixel_scale) -> Table:
    """Assemble the catalog from per-galaxy arrays (values/errors keyed by column name)."""
    n = len(ids)
    table = Table()
    table["id"] = np.asarray([str(i) for i in ids])
    scale = np.asarray([np.nan if s is None else s for s in pixel_scale], float)
    for column, comp, spec in model.catalog_columns:
        unit = _unit(spec.unit)
        v = np.asarray(values.get(column, np.full(n, np.nan)), float)
        e = np.asarray(errors.get(column, np.full(n, np.nan)), float) if errors else np.full(n, np.nan)
        table[column] = v if unit is None else v * unit
        table[f"{column}_err"] = e if unit is None else e * unit
        if spec.kind == "length":
            table[f"{column}_arcsec"] = v * scale * u.arcsec
            table[f"{column}_arcsec_err"] = e * scale * u.arcsec
    table["chi2_nu"] = np.asarray(chi2_nu, float)
    table["n_iter"] = np.asarray(n_iter, np.int32)
    table["flags"] = np.asarray(flags, np.int32)
    table["n_bad_pixels"] = np.asarray(n_bad_pixels, np.int32)
    table.meta["flags"] = "; ".join(f"{f.value}={f.name}" for f in Flag)
    table.meta["conventions"] = ("x, y 1-based pixels; mag = zeropoint - 2.5 log10(flux); lengths along "
                                 "the major axis; q = b/a; pa degrees CCW from +y")
    return table


def bad_input_rows(model, ids, pixel_scale=None) -> Table:
    """Rows for cutouts that could not be used: NaN parameters and Flag.BAD_INPUT."""
    n = len(ids)
    return build_catalog(model, ids, {}, None, np.full(n, np.nan), np.zeros(n), np.full(n, int(Flag.BAD_INPUT)),
                         np.zeros(n), pixel_scale or [None] * n)


def merge_in_order(tables, ids) -> Table:
    """Stack partial catalogs and order the rows as ``ids``."""
    table = vstack([t for t in tables if len(t)], metadata_conflicts="silent")
    order = {str(i): k for k, i in enumerate(ids)}
    table = table[np.argsort([order[str(i)] for i in table["id"]], kind="stable")]
    return table


def write_catalog(table: Table, path_stem) -> tuple[Path, Path]:
    """Write ``<stem>.fits`` and ``<stem>.ecsv`` (overwriting); returns both paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    fits_path, ecsv_path = stem.with_suffix(".fits"), stem.with_suffix(".ecsv")
    table.write(fits_path, overwrite=True)
    table.write(ecsv_path, overwrite=True, format="ascii.ecsv")
    return fits_path, ecsv_path
