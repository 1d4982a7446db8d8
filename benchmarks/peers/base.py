"""What every peer adapter returns, and the shared bits of building it.

An adapter is a module with ``NAME``, ``available() -> (bool, str)`` (version or the reason it
cannot run) and ``fit(cutouts, init, *, device="cpu", **settings) -> PeerResult``.  ``init`` is
an astropy Table in catalog conventions (``sersic_x`` ... ``sersic_pa``), one row per cutout;
the returned table uses the same conventions, so the benchmark compares every tool alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from ..dataset import PARAMS

__all__ = ["PeerResult", "result_table", "init_arrays"]


@dataclass
class PeerResult:
    """A tool's fits of a set of cutouts.

    table : id, sersic_<param> (catalog conventions), converged (bool).
    wall_s : seconds of the tool's fit call(s) for all cutouts (including its own error
        estimate when ``settings['errors']`` says so), excluding any warm-up.
    settings : how the tool was run (iterations, optimizer, errors, batch size, ...).
    """

    name: str
    version: str
    table: Table
    wall_s: float
    settings: dict = field(default_factory=dict)

    @property
    def galaxies_per_s(self) -> float:
        return len(self.table) / self.wall_s if self.wall_s > 0 else float("nan")


def init_arrays(init: Table, n: int | None = None) -> dict[str, np.ndarray]:
    """``{param: float64 array}`` from an init table's ``sersic_<param>`` columns (first n rows)."""
    missing = [f"sersic_{p}" for p in PARAMS if f"sersic_{p}" not in init.colnames]
    if missing:
        raise ValueError(f"initial-guess table lacks columns {missing}")
    rows = slice(None) if n is None else slice(0, n)
    return {p: np.asarray(init[f"sersic_{p}"], dtype=np.float64)[rows] for p in PARAMS}


def result_table(ids, values: dict[str, np.ndarray], converged) -> Table:
    """A peer's results as a catalog-convention table (columns id, sersic_*, converged)."""
    t = Table()
    t["id"] = list(ids)
    for p in PARAMS:
        t[f"sersic_{p}"] = np.asarray(values[p], dtype=np.float64)
    t["converged"] = np.asarray(converged, dtype=bool)
    return t
