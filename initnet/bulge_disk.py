"""Starting values for multi-component models from one single-Sérsic start (a documented rule).

Multi-component fits are where starts matter most, and a single Sérsic fit (or prediction) of the
whole galaxy already knows its centre, total light, size, concentration and shape.  The rule, in
the spirit of the generic bulge + disk recipe GALFIT's author recommends:

* **bulge-to-total** from the single-Sérsic index: ``B/T = clip(0.1 + 0.2 (n - 1), 0.1, 0.7)``
  (a pure disk, n = 1, starts at 0.1; n = 4 at 0.7);
* **bulge**: the same centre, ``mag_b = mag - 2.5 log10(B/T)``, ``r_e,b = max(0.3 r_e, 0.5 px)``,
  ``n_b = 4`` when n >= 2.5 else 2, ``q_b = max(q, 0.6)`` (bulges are rounder), the same pa;
* **disk**: the same centre, ``mag_d = mag - 2.5 log10(1 - B/T)``, ``r_e,d = 1.2 r_e``
  (the disk dominates the outskirts: larger than the single-Sérsic r_e), ``n_d = 1``, the same q
  and pa;
* a **point source** (``psf``) gets the centre and ``mag + 2.5`` (10 % of the light);
* a **sky** component starts at 0; further components of a kind not named above get the
  single-Sérsic values with ``mag + 2.5 log10(k)`` for k extended components.

:func:`complete_starts` fills the values an init table lacks (or holds as NaN) by this rule,
from sep moments of each cutout that needs one: ``galmoss-auto fit`` uses it for the columns its
``--init`` table and the feedme leave open, and ``galmoss-auto run --model`` applies the rule to
the initializer's single-Sérsic start.  On 200 held-out SDSS-like bulge + disk cutouts the rule
from sep starts gives 34.5 % catastrophic fits against 76.5 % from the fitter's generic guess
(centre, total flux, n = 2.5, a tenth of the cutout; ``benchmarks/results/2026-12-06-vm-cpu-bulge-disk-starts.md``).

Which component is the bulge: a component named ``bulge`` (or of kind ``devauc``/``gaussian``),
else the first of two extended components; the disk is one named ``disk`` (or of kind
``expdisk``), else the other.  Only the parameters a component has are set (an exponential's
scale length is ``r_e / 1.678``, a Gaussian's FWHM ``2 r_e``); everything is in
catalog conventions (x, y 1-based, mag, r_e px, q, pa deg).
"""

from __future__ import annotations

import numpy as np

__all__ = ["bulge_to_total", "bulge_disk_start", "multi_component_start", "complete_starts"]

_BULGE_KINDS = ("devauc", "gaussian")
_DISK_KINDS = ("expdisk",)
_EXTENDED = ("sersic", "devauc", "expdisk", "gaussian", "moffat", "ferrer", "king")


def bulge_to_total(n) -> np.ndarray:
    """B/T start from a single-Sérsic index n (see the module docstring)."""
    return np.clip(0.1 + 0.2 * (np.asarray(n, dtype=np.float64) - 1.0), 0.1, 0.7)


def bulge_disk_start(single: dict) -> tuple[dict, dict]:
    """(bulge, disk) parameter dicts of arrays from a single-Sérsic start ``single`` (keys
    x, y, mag, r_e, n, q, pa; scalars or arrays)."""
    s = {k: np.asarray(single[k], dtype=np.float64) for k in ("x", "y", "mag", "r_e", "n", "q", "pa")}
    bt = bulge_to_total(s["n"])
    bulge = {"x": s["x"], "y": s["y"], "mag": s["mag"] - 2.5 * np.log10(bt),
             "r_e": np.maximum(0.3 * s["r_e"], 0.5), "n": np.where(s["n"] >= 2.5, 4.0, 2.0),
             "q": np.maximum(s["q"], 0.6), "pa": s["pa"]}
    disk = {"x": s["x"], "y": s["y"], "mag": s["mag"] - 2.5 * np.log10(1.0 - bt),
            "r_e": 1.2 * s["r_e"], "n": np.ones_like(s["n"]), "q": s["q"], "pa": s["pa"]}
    return bulge, disk


def _roles(model) -> dict:
    """{component name: "bulge" | "disk" | "point" | "sky" | "other"}."""
    comps = model.components
    roles = {}
    for c in comps:
        if c.point_like:
            roles[c.name] = "point"
        elif not c.convolved:
            roles[c.name] = "sky"
    extended = [c for c in comps if c.name not in roles and c.kind in _EXTENDED]
    bulge = next((c for c in extended if c.name.lower() == "bulge"), None) \
        or next((c for c in extended if c.kind in _BULGE_KINDS), None)
    disk = next((c for c in extended if c.name.lower() == "disk" and c is not bulge), None) \
        or next((c for c in extended if c.kind in _DISK_KINDS and c is not bulge), None)
    if len(extended) >= 2:
        bulge = bulge or next(c for c in extended if c is not disk)
        disk = disk or next(c for c in extended if c is not bulge)
        roles[bulge.name], roles[disk.name] = "bulge", "disk"
    for c in comps:
        roles.setdefault(c.name, "other")
    return roles


def multi_component_start(model, single: dict) -> dict:
    """Init columns ``<component>_<param>`` (arrays) for every component of ``model``
    (:class:`galmoss_auto.fitting.Model`) from a single-Sérsic start (see the module docstring).
    A model with one extended component gets the single-Sérsic values as they are."""
    s = {k: np.asarray(single[k], dtype=np.float64) for k in ("x", "y", "mag", "r_e", "n", "q", "pa")}
    roles = _roles(model)
    bulge, disk = bulge_disk_start(s)
    n_other = max(1, sum(r == "other" and c.kind in _EXTENDED for c, r in
                         ((c, roles[c.name]) for c in model.components)))
    out = {}
    for comp in model.components:
        role = roles[comp.name]
        if role == "sky":
            values = {"sky": np.zeros_like(s["x"])}
        elif role == "point":
            values = {"x": s["x"], "y": s["y"], "mag": s["mag"] + 2.5}
        elif role == "bulge":
            values = bulge
        elif role == "disk":
            values = disk
        else:
            values = dict(s, mag=s["mag"] + 2.5 * np.log10(n_other))
        for spec in comp.param_specs:
            if spec.name in values:
                out[f"{comp.name}_{spec.name}"] = values[spec.name]
            elif spec.name == "r_s" and "r_e" in values:  # expdisk scale length: r_e = 1.678 r_s
                out[f"{comp.name}_{spec.name}"] = values["r_e"] / 1.6783
            elif spec.name == "fwhm" and "r_e" in values:  # Gaussian: FWHM = 2 r_e (exact)
                out[f"{comp.name}_{spec.name}"] = 2.0 * values["r_e"]
    return out


def complete_starts(model, init: dict, cutouts, detect=None) -> tuple[dict, np.ndarray]:
    """``(columns, flags)``: ``init`` (columns ``<component>_<param>``, one value per cutout, catalog
    conventions) with every parameter of ``model`` it lacks, or holds as NaN, and the rule
    measures (not a boxiness, a sky or its gradient: those keep the fitter's guess), filled by
    :func:`multi_component_start` from a sep single-Sérsic start of that cutout
    (:class:`~galmoss_auto.initnet.sep_init.SepInitializer`, run only on the cutouts that need
    one; ``detect``: its sep settings).  ``flags`` (one int per cutout) carries the sep
    initializer's flags (INIT_FALLBACK, NO_CENTRAL_DETECTION) where a start was taken from it,
    0 elsewhere.  Fixed parameters need no start (the model's value wins)."""
    from .base import PARAMS
    from .sep_init import SepInitializer

    cutouts = list(cutouts)
    n = len(cutouts)
    out = {k: np.asarray(v, dtype=np.float64).reshape(-1).copy() for k, v in dict(init).items()}
    for k, v in out.items():
        if v.size != n:
            raise ValueError(f"initial-value column {k!r} has {v.size} rows for {n} cutouts")
    roles = _roles(model)
    # the columns the rule gives (they depend on the model only), less the fixed ones
    given = multi_component_start(model, {p: np.ones(1) for p in PARAMS})
    fillable = [(column, comp) for (column, comp, _), full in zip(model.catalog_columns, model.full_names)
                if column in given and model.fixed.get(full) is None]
    # only what the rule measures needs a sep start: the rule's sky is the fitter's 0
    open_ = np.zeros(n, bool)
    for column, comp in fillable:
        if roles[comp.name] != "sky":
            open_ |= ~np.isfinite(out[column]) if column in out else True
    flags = np.zeros(n, np.int64)
    rows = np.flatnonzero(open_)
    if rows.size == 0:
        return out, flags
    sep_init = SepInitializer(detect)
    single = {p: np.empty(rows.size) for p in PARAMS}
    for k, i in enumerate(rows):
        res = sep_init(cutouts[i])
        flags[i] = int(res.flags)
        for p in PARAMS:
            single[p][k] = float(res.params[p])
    rule = multi_component_start(model, single)
    for column, _ in fillable:
        values = out.setdefault(column, np.full(n, np.nan))
        fill = rows[~np.isfinite(values[rows])]
        values[fill] = rule[column][np.searchsorted(rows, fill)]
    return out, flags
