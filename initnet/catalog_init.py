"""``--init PATH``: starting values from the user's own catalog.

The catalog (FITS, ECSV or CSV) has an ``id`` column and any of ``sersic_x``, ``sersic_y``,
``sersic_mag``, ``sersic_r_e``, ``sersic_n``, ``sersic_q``, ``sersic_pa`` in the catalog
conventions (see :mod:`galmoss_auto.initnet.base`).  Values it gives win; the ones it lacks (a
missing column, a blank or NaN cell, or an id not in the catalog) come from the sep
initializer, and such a galaxy is flagged ``INIT_FALLBACK`` only when its id is absent.
"""

from __future__ import annotations

import math
from pathlib import Path

from galmoss_auto.fitting.flags import Flag
from galmoss_auto.initnet.base import PARAMS, InitResult

__all__ = ["CatalogInitializer"]


class CatalogInitializer:
    """Initial values from ``path``; ``component`` is the column prefix (default ``sersic``)."""

    name = "catalog"

    def __init__(self, path, component: str = "sersic", detect=None):
        from astropy.table import Table

        from galmoss_auto.initnet.sep_init import SepInitializer

        path = Path(path)
        try:
            fmt = {"csv": "ascii.csv"}.get(path.suffix.lower().lstrip("."))
            table = Table.read(path, format=fmt) if fmt else Table.read(path)
        except Exception as exc:
            raise ValueError(f"{path}: cannot read the initial-value catalog "
                             f"({type(exc).__name__}: {exc})") from None
        if "id" not in table.colnames:
            raise ValueError(f"{path}: initial-value catalog has no 'id' column")
        cols = [p for p in PARAMS if f"{component}_{p}" in table.colnames]
        if not cols:
            raise ValueError(f"{path}: initial-value catalog has none of the columns "
                             f"{[f'{component}_{p}' for p in PARAMS]}")
        self.path = str(path)
        self.values = {}
        for row in table:
            vals = {}
            for p in cols:
                try:
                    v = float(row[f"{component}_{p}"])
                except (TypeError, ValueError):
                    continue
                if math.isfinite(v):
                    vals[p] = v
            self.values[str(row["id"]).strip()] = vals
        self.sep = SepInitializer(detect)

    def __call__(self, cutout, detection=None) -> InitResult:
        base = self.sep(cutout, detection)
        given = self.values.get(cutout.id)
        if given is None:
            return InitResult(base.params, base.flags | int(Flag.INIT_FALLBACK),
                              base.columns | {"init_from_catalog": False})
        # sep's own fallback flags do not apply to the values the user gave.
        flags = 0 if len(given) == len(PARAMS) else base.flags
        return InitResult(base.params | given, flags,
                          base.columns | {"init_from_catalog": True, "init_method": "catalog"})
