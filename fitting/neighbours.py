"""Fit the target galaxy together with its overlapping neighbours (GALFIT / GALAPAGOS practice).

    >>> catalog, nb = fit_with_neighbours(cutouts, init, neighbours)

Each cutout's neighbours (up to ``max_neighbours``, default all given) become extra components
of that cutout's model: a Sérsic for a galaxy, a point source (the PSF) for a star, named
``nb1``, ``nb2``, ... after the target's components.  A star in a cutout without a PSF is
modelled as a Gaussian (fwhm free, starting at 2 px): a point source needs a PSF.

**Batching**: cutouts are grouped by the kinds of their neighbours, in order (e.g. all
cutouts with ``(galaxy, star)`` together), and each group is one call of
:func:`~galmoss_auto.fitting.api.fit` with its own model, batched as usual (by PSF presence and
size inside).  Grouping, not padding with inactive components: every fitted parameter is a real
one, no component is ever switched off inside the solver, and the catalog's errors and flags
mean what they mean for a plain fit.  With K <= 3 and two kinds there are at most 15 groups.

Returns the main catalog, with exactly the rows and columns :func:`fit` would give for
``model`` alone (the neighbours' parameters do not appear in it; ``chi2_nu`` and ``flags``
are those of the joint fit, where a neighbour on a bound sets NEIGHBOUR_AT_BOUND, not
AT_BOUND), and a neighbours table (astropy Table with units): ``id`` (the
cutout), ``index`` (1-based, in the order given), ``kind``, ``x``, ``y``, ``mag``, ``r_e``,
``n``, ``q``, ``pa`` (NaN where a kind lacks them; a Gaussian star's ``r_e`` is its FWHM / 2)
with ``_err`` columns, and ``flags`` (the joint fit's).
"""

from __future__ import annotations

import math

import numpy as np
from astropy import units as u
from astropy.table import Table

from .api import fit
from .catalog import build_catalog, merge_in_order
from .model import Model, default_model
from .profiles import Gaussian, PointSource, Sersic

__all__ = ["fit_with_neighbours", "neighbours_from_table", "NEIGHBOUR_PARAMS", "NEIGHBOUR_WINDOW"]

NEIGHBOUR_PARAMS = ("x", "y", "mag", "r_e", "n", "q", "pa")
_UNITS = {"x": u.pix, "y": u.pix, "mag": u.mag, "r_e": u.pix, "pa": u.deg}
_PREFIX = "nb"


def _kind_and_params(nb) -> tuple[str, dict]:
    if hasattr(nb, "kind") and hasattr(nb, "params"):
        return str(nb.kind), dict(nb.params)
    if isinstance(nb, dict) and "kind" in nb:
        return str(nb["kind"]), {k: v for k, v in nb.items() if k != "kind"}
    raise TypeError(f"a neighbour is a Neighbour or a dict with 'kind', got {type(nb).__name__}")


def neighbours_from_table(table, ids: list[str]) -> list[list[dict]]:
    """Per-cutout neighbour lists from a table with columns ``id, kind, x, y, mag`` and, for
    galaxies, ``r_e, n, q, pa`` (catalog conventions); rows keep their order within an id.
    Raises ``ValueError`` naming the column or row that is unusable."""
    names = set(table.colnames)
    for col in ("id", "kind", "x", "y", "mag"):
        if col not in names:
            raise ValueError(f"neighbour table lacks column {col!r} (needs id, kind, x, y, mag; "
                             "galaxies also r_e, n, q, pa)")
    out = {str(i): [] for i in ids}
    for k, row in enumerate(table):
        gid, kind = str(row["id"]).strip(), str(row["kind"]).strip().lower()
        if kind not in ("galaxy", "star"):
            raise ValueError(f"neighbour table row {k + 1}: kind must be 'galaxy' or 'star', got {kind!r}")
        params = {}
        for p in NEIGHBOUR_PARAMS:
            if p in names:
                v = row[p]
                v = float(getattr(v, "value", v)) if not np.ma.is_masked(v) else math.nan
                params[p] = v
        if kind == "galaxy":
            missing = [p for p in ("r_e", "n", "q", "pa") if not np.isfinite(params.get(p, math.nan))]
            defaults = {"r_e": 3.0, "n": 1.5, "q": 0.8, "pa": 0.0}
            for p in missing:
                params[p] = defaults[p]  # a user list may give only positions and magnitudes
        for p in ("x", "y", "mag"):
            if not np.isfinite(params[p]):
                raise ValueError(f"neighbour table row {k + 1} (id {gid}): {p} is not a finite number")
        if gid in out:
            out[gid].append({"kind": kind, **params})
    return [out[str(i)] for i in ids]


def _components(kinds: tuple[str, ...], has_psf: bool):
    comps = []
    for k, kind in enumerate(kinds, start=1):
        name = f"{_PREFIX}{k}"
        if kind == "galaxy":
            comps.append(Sersic(name))
        elif has_psf:
            comps.append(PointSource(name))
        else:
            comps.append(Gaussian(name))
    return comps


def _init_columns(init, cutouts) -> dict:
    if init is None:
        return {}
    cols = ({n: np.asarray(init[n]) for n in init.colnames} if hasattr(init, "colnames")
            else {k: np.asarray(v) for k, v in dict(init).items()})
    if "id" in cols:
        where = {str(i): k for k, i in enumerate(cols["id"])}
        missing = [c.id for c in cutouts if str(c.id) not in where]
        if missing:
            raise KeyError(f"initial-guess table has no row for id(s) {missing[:5]}")
        order = np.array([where[str(c.id)] for c in cutouts], int)
        cols = {k: v[order] for k, v in cols.items() if k != "id"}
    return {k: np.asarray(getattr(v, "value", v)) for k, v in cols.items()}


def _empty_neighbour_table() -> Table:
    t = Table()
    t["id"] = np.zeros(0, "U1")
    t["index"] = np.zeros(0, np.int32)
    t["kind"] = np.zeros(0, "U6")
    for p in NEIGHBOUR_PARAMS:
        for suffix in ("", "_err"):
            t[p + suffix] = np.zeros(0) * _UNITS[p] if p in _UNITS else np.zeros(0)
    t["flags"] = np.zeros(0, np.int32)
    return t


#: Default half-width (px) of the box around its start that a neighbour's centre stays in.
NEIGHBOUR_WINDOW = 5.0


def fit_with_neighbours(cutouts, init, neighbours, model: Model | None = None, *,
                        max_neighbours: int | None = None, window: float | None = NEIGHBOUR_WINDOW,
                        **fit_kwargs):
    """Fit each cutout's target with its neighbours as extra components (module docstring).

    cutouts : list of :class:`~galmoss_auto.fitting.cutout.Cutout`.
    init : the target's initial values (as for :func:`fit`: Table or dict of
        ``<component>_<param>`` columns, matched by ``id`` or order), or None.
    neighbours : one list per cutout of :class:`~galmoss_auto.automask.base.Neighbour` (or
        dicts with ``kind`` and the parameters), or a Table (see :func:`neighbours_from_table`).
    model : the target's model (default one Sérsic ``sersic``); its fixed parameters, ties and
        bounds are kept.  Its component names must not start with ``nb``.
    max_neighbours : fit at most this many per cutout (the first ones; >= 0; default all).
    window : a neighbour's centre stays within this many px (in x and y) of its start (> 0;
        default :data:`NEIGHBOUR_WINDOW`; None = anywhere in the cutout).  A neighbour is
        started on its own light; left free, a faint one can drift onto the target and fit its
        core (:class:`~galmoss_auto.fitting.model.Model`'s ``windows``).
    fit_kwargs : passed to :func:`fit` (method, errors, device, batch_size, ...).

    Returns ``(catalog, neighbours_table)``.
    """
    model = model or default_model()
    cutouts = list(cutouts)
    clash = [c.name for c in model.components if c.name.startswith(_PREFIX)]
    if clash:
        raise ValueError(f"component names starting with {_PREFIX!r} are reserved for neighbours: {clash}")
    if window is not None and not window > 0:
        raise ValueError(f"window must be > 0 px (or None), got {window}")
    if max_neighbours is not None and int(max_neighbours) < 0:
        raise ValueError(f"max_neighbours must be >= 0, got {max_neighbours}")
    if hasattr(neighbours, "colnames"):
        neighbours = neighbours_from_table(neighbours, [c.id for c in cutouts])
    neighbours = [list(n or []) for n in neighbours]
    if len(neighbours) != len(cutouts):
        raise ValueError(f"{len(neighbours)} neighbour lists for {len(cutouts)} cutouts")
    if max_neighbours is not None:
        neighbours = [n[:int(max_neighbours)] for n in neighbours]
    parsed = [[_kind_and_params(nb) for nb in lst] for lst in neighbours]
    cols = _init_columns(init, cutouts)
    reference = build_catalog(model, [], {}, None, [], [], [], [], []).colnames
    if not cutouts:
        return build_catalog(model, [], {}, None, [], [], [], [], []), _empty_neighbour_table()

    groups: dict = {}
    for i, (c, lst) in enumerate(zip(cutouts, parsed)):
        groups.setdefault((tuple(k for k, _ in lst), c.psf is not None), []).append(i)
    mains, rows = [], []
    for (kinds, has_psf), idx in groups.items():
        sub = [cutouts[i] for i in idx]
        sub_init = {k: v[idx] for k, v in cols.items()}
        if not kinds:
            mains.append(fit(sub, sub_init, model, **fit_kwargs))
            continue
        extra = _components(kinds, has_psf)
        joint = Model(list(model.components) + extra, fixed=model.fixed, ties=model.ties, bounds=model.bounds,
                      windows={**model.windows, **({c.name: window for c in extra} if window else {})},
                      auxiliary=list(model.auxiliary) + [c.name for c in extra])
        for k, comp in enumerate(extra):
            for spec in comp.param_specs:
                name = spec.name
                values = []
                for i in idx:
                    params = parsed[i][k][1]
                    if comp.kind == "gaussian" and name == "fwhm":
                        values.append(2.0)
                    elif comp.kind == "gaussian" and name in ("q", "pa"):
                        values.append(0.95 if name == "q" else 0.0)
                    else:
                        values.append(float(params.get(name, math.nan)))
                sub_init[f"{comp.name}_{name}"] = np.asarray(values, float)
        table = fit(sub, sub_init, joint, **fit_kwargs)
        mains.append(table[reference])
        for r, i in zip(table, idx):
            for k, comp in enumerate(extra):
                row = {"id": str(r["id"]), "index": k + 1, "kind": kinds[k], "flags": int(r["flags"])}
                for p in NEIGHBOUR_PARAMS:
                    src = "fwhm" if (comp.kind == "gaussian" and p == "r_e") else p
                    col = f"{comp.name}_{src}"
                    v = float(getattr(r[col], "value", r[col])) if col in table.colnames else math.nan
                    e = float(getattr(r[col + "_err"], "value", r[col + "_err"])) if col in table.colnames else math.nan
                    if src == "fwhm":
                        v, e = v / 2.0, e / 2.0
                    row[p], row[p + "_err"] = v, e
                rows.append((i, row))
    catalog = merge_in_order(mains, [c.id for c in cutouts])
    catalog = catalog[reference]
    nb = _empty_neighbour_table()
    if rows:
        rows.sort(key=lambda t: (t[0], t[1]["index"]))
        data = {c: [row[c] for _, row in rows] for c in nb.colnames}
        nb = Table(data)
        nb["index"] = np.asarray(nb["index"], np.int32)
        nb["flags"] = np.asarray(nb["flags"], np.int32)
        for p, unit in _UNITS.items():
            nb[p].unit = unit
            nb[p + "_err"].unit = unit
    nb.meta["conventions"] = ("x, y 1-based pixels; mag = zeropoint - 2.5 log10(flux); r_e major-axis "
                              "pixels; q = b/a; pa degrees CCW from +y; index 1-based per cutout")
    return catalog, nb
