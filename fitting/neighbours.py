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
with ``_err`` columns, ``origin`` (``given``: from the caller's list; ``residual``: found by
the search below; ``target``: fitted as the target, then swapped out, see *Centred cutouts*)
and ``flags`` (the joint fit's).

**Residual search** (``search=True``; ``run`` turns it on): a neighbour that the masker merged
into the target's footprint, or missed, is absorbed by the target's profile, which comes out
too bright and too large.  After the fit, each cutout's residual is searched for the strongest
lopsided source (:mod:`~galmoss_auto.fitting.residual_sources`); where one is found, it is
added as a Sérsic neighbour and the cutout is refitted from the first fit; the refit is kept
only if chi² drops by more than ``search_min_dchi2`` and the new source looks like an object of
its own (n and q off their bounds, r_e below half the cutout's longer side; on real galaxies a
lopsided residual is often a spiral arm or a sky gradient, see :func:`_plausible_source`).
One source per cutout, one extra pass: the refit costs one more fit for the cutouts with a
candidate (whose matched-filter S/N² reaches ``search_min_dchi2``), nothing for the others.

**Centred cutouts** (``centred=True``; ``run`` turns it on, since a survey stamp is cut around its
target): when a faint target sits in the halo of a brighter galaxy a few PSF widths away, the
masker may see only the bright one, whose light covers the centre, and the fit then measures
it; the search above usually finds the real target in the residual, as a neighbour at the
centre.  So, after the fit, a target whose centre ended beyond :func:`centre_tolerance` (max(5 px,
1 PSF FWHM)) of the cutout centre, with the cutout centre outside its half-light ellipse (a
large galaxy in a cutout not centred on it still covers the centre; a fit whose r_e ran past
half the cutout covers nothing), trades places with the fitted Sérsic neighbour nearest the
centre, if that one ended within the tolerance and did not fade away (:data:`FADED_MAG`): the joint
fit is unchanged, only which component the catalog row describes (flag CENTRE_SWAPPED; the
old target's row in the neighbours table has ``origin`` "target").  Otherwise the row is
flagged CENTRE_OFFSET: whatever was fitted is not at the position the cutout was made for.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from astropy import units as u
from astropy.table import Table

from .api import fit
from .blocks import point_elliptical_radius
from .catalog import build_catalog, merge_in_order
from .flags import Flag
from .model import Model, default_model
from .profiles import Gaussian, PointSource, Sersic
from .residual_sources import DEFAULT_THRESHOLD

__all__ = ["fit_with_neighbours", "neighbours_from_table", "centre_tolerance", "NEIGHBOUR_PARAMS", "NEIGHBOUR_WINDOW",
           "NEIGHBOUR_GROWTH", "EDGE_RE", "SEARCH_MIN_DCHI2", "CENTRE_TOLERANCE_PX", "CENTRE_TOLERANCE_FWHM",
           "FADED_MAG"]

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
    t["origin"] = np.zeros(0, "U8")
    for p in NEIGHBOUR_PARAMS:
        for suffix in ("", "_err"):
            t[p + suffix] = np.zeros(0) * _UNITS[p] if p in _UNITS else np.zeros(0)
    t["flags"] = np.zeros(0, np.int32)
    return t


def _joint_model(model: Model, kinds: tuple, has_psf: bool, limits: tuple, at_edge: tuple = ()
                 ) -> tuple[Model, list]:
    """``model`` plus one component per neighbour kind; ``limits`` = (window, growth) of
    :func:`fit_with_neighbours`, each None for none; ``at_edge``: per neighbour, True where it
    is exempt from the growth limit (:func:`_at_edge`)."""
    if not kinds:
        return model, []
    window, growth = limits
    extra = _components(kinds, has_psf)
    limited = [c.name for k, c in enumerate(extra) if not (at_edge and at_edge[k])] if growth else []
    joint = Model(list(model.components) + extra, fixed=model.fixed, ties=model.ties, bounds=model.bounds,
                  windows={**model.windows, **({c.name: window for c in extra} if window else {})},
                  growth={**model.growth, **{name: growth for name in limited}},
                  auxiliary=list(model.auxiliary) + [c.name for c in extra])
    return joint, extra


def _at_edge(params: dict, shape) -> bool:
    """Whether a neighbour started within :data:`EDGE_RE` x its starting r_e of the cutout's
    edge: its light runs off the cutout, so the pixels it was started from understate its
    size, and the growth limit is not applied to it."""
    r_e, x, y = (float(params.get(k, math.nan)) for k in ("r_e", "x", "y"))
    if not np.all(np.isfinite([r_e, x, y])):
        return False
    h, w = shape
    x, y = x - 0.5, y - 0.5   # 1-based pixel centres -> distance from the edge at 0
    return min(x, y, w - x, h - y) < EDGE_RE * r_e


def _fit_groups(model, cutouts, cols, parsed, origins, limits, fit_kwargs, reference):
    """One :func:`fit` per group of cutouts with the same neighbour kinds and edge exemptions
    (``parsed``: per cutout, (kind, params) with ``params["at_edge"]`` set; module docstring).
    Returns (main tables, neighbour rows as (cutout index, row dict), (joint model, cutout
    indices, joint table) per group)."""
    groups: dict = {}
    for i, (c, lst) in enumerate(zip(cutouts, parsed)):
        key = (tuple(k for k, _ in lst), tuple(bool(p["at_edge"]) for _, p in lst), c.psf is not None)
        groups.setdefault(key, []).append(i)
    mains, rows, joints = [], [], []
    for (kinds, at_edge, has_psf), idx in groups.items():
        sub = [cutouts[i] for i in idx]
        sub_init = {k: v[idx] for k, v in cols.items()}
        joint, extra = _joint_model(model, kinds, has_psf, limits, at_edge)
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
        joints.append((joint, idx, table))
        mains.append(table[reference])
        for r, i in zip(table, idx):
            for k, comp in enumerate(extra):
                row = {"id": str(r["id"]), "index": k + 1, "kind": kinds[k], "origin": origins[i][k],
                       "flags": int(r["flags"])}
                for p in NEIGHBOUR_PARAMS:
                    src = "fwhm" if (comp.kind == "gaussian" and p == "r_e") else p
                    col = f"{comp.name}_{src}"
                    v = float(getattr(r[col], "value", r[col])) if col in table.colnames else math.nan
                    e = float(getattr(r[col + "_err"], "value", r[col + "_err"])) if col in table.colnames else math.nan
                    if src == "fwhm":
                        v, e = v / 2.0, e / 2.0
                    row[p], row[p + "_err"] = v, e
                rows.append((i, row))
    return mains, rows, joints


def _centre_component(model: Model):
    """The target's component that carries the centre (the first with x and y)."""
    for comp in model.components:
        names = {s.name for s in comp.param_specs}
        if {"x", "y"} <= names:
            return comp
    return None


class _MissedSource(NamedTuple):
    """A cutout's missed source and what its refit starts from and is judged against."""

    params: dict        # the new neighbour's starting parameters (catalog conventions)
    chi2: float         # chi² of the first fit
    n_good: float       # good pixels (the refit's chi² is its chi2_nu times n_good - free params)
    target: dict        # the target's fitted columns (the refit's warm start)
    neighbours: list    # the known neighbours' fitted params, in order


def _missed_sources(model, cutouts, joints, fit_kwargs, threshold, min_dchi2) -> dict:
    """Render each group's joint fit and look for a missed source in its residual
    (:func:`~galmoss_auto.fitting.residual_sources.find_residual_sources`).  Returns
    {cutout index: :class:`_MissedSource`}."""
    import torch

    from .api import default_batch_size
    from .problem import FitProblem
    from .render import RenderConfig
    from .cutout import psf_fwhm_px
    from .residual_sources import NO_PSF_FWHM, find_residual_sources

    centre = _centre_component(model)
    if centre is None:
        return {}
    device = torch.device(fit_kwargs.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    step = int(fit_kwargs.get("batch_size") or default_batch_size(device))
    out = {}
    for joint, idx, table in joints:
        values = {k: np.asarray(getattr(table[k], "value", table[k]), float) for k in table.colnames
                  if k not in ("id", "flags", "n_iter", "chi2_nu") and not k.endswith("_err")
                  and np.asarray(table[k]).dtype.kind in "fi"}
        ok = (np.isfinite(np.asarray(table["chi2_nu"], float))
              & np.isfinite(values[f"{centre.name}_x"]) & np.isfinite(values[f"{centre.name}_y"]))
        live = [j for j in range(len(idx)) if ok[j]]
        for start in range(0, len(live), step):
            js = live[start:start + step]
            sub = [cutouts[idx[j]] for j in js]
            problem = FitProblem(joint, sub, device=device, config=fit_kwargs.get("render_config") or RenderConfig())
            full = joint.initial_full({k: v[js] for k, v in values.items()}, sub).to(device)
            tensors = problem.subset()
            with torch.no_grad():
                model_img = problem.model_image(full, tensors)
            fwhm = torch.tensor([psf_fwhm_px(c.psf, c.psf_oversampling) or NO_PSF_FWHM for c in sub])
            centre_xy = torch.tensor(np.stack([values[f"{centre.name}_x"][js], values[f"{centre.name}_y"][js]], 1) - 1.0)
            found = find_residual_sources(tensors["data"], model_img, tensors["weight"], centre_xy, fwhm,
                                          threshold=threshold)
            chi2 = (((tensors["data"] - model_img) * tensors["weight"]) ** 2).sum(dim=(1, 2)).double().cpu().numpy()
            n_good = problem.n_good.cpu().numpy()
            for k, j in enumerate(js):
                # a source's matched-filter S/N squared is about the chi² it can remove: one
                # that cannot pass the refit's test is not worth refitting
                if not found.found[k] or found.snr[k] ** 2 < min_dchi2:
                    continue
                c = sub[k]
                flux = max(float(found.flux[k]), 1e-30)
                params = {"x": found.x[k] + 1.0, "y": found.y[k] + 1.0, "mag": c.zeropoint - 2.5 * math.log10(flux),
                          "r_e": max(float(fwhm[k]) / 2.0, 1.0), "n": 1.0, "q": 0.8, "pa": 0.0}
                warm_target = {name: values[name][j] for name in values if not name.startswith(_PREFIX)}
                warm_nbs = [{spec.name: values[f"{comp.name}_{spec.name}"][j] for spec in comp.param_specs
                             if f"{comp.name}_{spec.name}" in values}
                            for comp in joint.components if comp.name.startswith(_PREFIX)]
                out[idx[j]] = _MissedSource(params, float(chi2[k]), float(n_good[k]), warm_target, warm_nbs)
    return out


def _plausible_source(row: dict, shape) -> bool:
    """Whether a residual source's fit looks like a separate object: n and q not on a bound,
    r_e below half the cutout's longer side.  On real galaxies the lopsided residual is often
    the target's own structure (a spiral arm, a bar's end) or the sky's (a gradient); fitted as
    a Sérsic it runs to q -> 0.02, n -> 0.2 or 10, or r_e of thousands of pixels, and taking it
    away would take the target's light or the sky's."""
    specs = {spec.name: spec for spec in Sersic("nb").param_specs}
    n, q, r_e = float(row["n"]), float(row["q"]), float(row["r_e"])
    if not (np.isfinite(n) and np.isfinite(q) and np.isfinite(r_e)):
        return False
    if n <= 1.05 * specs["n"].lower or n >= 0.95 * specs["n"].upper or q <= 1.5 * specs["q"].lower:
        return False
    return r_e < 0.5 * max(shape)


def _search_and_refit(model, cutouts, cols, parsed, origins, limits, fit_kwargs, reference, joints, catalog, rows,
                      threshold, min_dchi2):
    """Add each cutout's missed residual source as a Sérsic neighbour, refit those cutouts
    (started from the first fit) and keep a refit whose chi² is lower by more than ``min_dchi2``."""
    missed = _missed_sources(model, cutouts, joints, fit_kwargs, threshold, min_dchi2)
    if not missed:
        return catalog, rows
    idx = sorted(missed)
    # warm start: the target and the known neighbours from the first fit, the new source from
    # its residual (a cold start costs ~20 % more LM iterations for the same result)
    sub_parsed = [[(kind, {**p, **missed[i].neighbours[k]}) for k, (kind, p) in enumerate(parsed[i])]
                  + [("galaxy", {**missed[i].params, "at_edge": _at_edge(missed[i].params, cutouts[i].shape)})]
                  for i in idx]
    cols = {k: np.array(v, float, copy=True) for k, v in cols.items()}
    for i in idx:
        for k, v in missed[i].target.items():
            if np.isfinite(v):
                cols.setdefault(k, np.full(len(cutouts), np.nan))[i] = v
    sub_origins = [origins[i] + ["residual"] for i in idx]
    mains, new_rows, refits = _fit_groups(model, [cutouts[i] for i in idx], {k: v[idx] for k, v in cols.items()},
                                          sub_parsed, sub_origins, limits, fit_kwargs, reference)
    refit = merge_in_order(mains, [cutouts[i].id for i in idx])[reference]
    found = {j: r for j, r in new_rows if r["origin"] == "residual"}
    n_free = {j: joint.n_free for joint, group, _ in refits for j in group}
    accepted = set()
    for j, i in enumerate(idx):
        chi2_new = float(refit["chi2_nu"][j]) * (missed[i].n_good - n_free[j])
        if (np.isfinite(chi2_new) and missed[i].chi2 - chi2_new > min_dchi2
                and j in found and _plausible_source(found[j], cutouts[i].shape)):
            accepted.add(i)
            catalog[i] = refit[j]
    if accepted:
        rows = [(i, r) for i, r in rows if i not in accepted] + \
               [(idx[j], r) for j, r in new_rows if idx[j] in accepted]
    return catalog, rows


#: Default chi² drop for which a residual source is kept (about 5 sigma with 7 parameters).
SEARCH_MIN_DCHI2 = 25.0

#: Default half-width (px) of the box around its start that a neighbour's centre stays in.
NEIGHBOUR_WINDOW = 5.0

#: Default limit on a neighbour's growth: its r_e stays below this factor x its start (this
#: factor squared along the other axis, if its axes swap).
NEIGHBOUR_GROWTH = 3.0

#: A neighbour started within this many of its starting r_e of the cutout's edge is exempt
#: from the growth limit (:func:`_at_edge`).
EDGE_RE = 2.0

#: ``centred=True``: a fitted centre farther than max(CENTRE_TOLERANCE_PX, CENTRE_TOLERANCE_FWHM
#: x PSF FWHM) from the cutout centre is off the target.
CENTRE_TOLERANCE_PX = 5.0
CENTRE_TOLERANCE_FWHM = 1.0
#: ``centred=True``: a neighbour fainter than the fitted target by more than this (mag; flux
#: ratio 1e-3) has faded away in the fit and never replaces it.  Real targets found at the
#: centre were at most 4.8 mag fainter than the neighbour fitted in their place.
FADED_MAG = 7.5


def centre_tolerance(cutout) -> float:
    """The distance (px) from ``cutout``'s centre beyond which a fitted centre is off its
    target: max(:data:`CENTRE_TOLERANCE_PX`, :data:`CENTRE_TOLERANCE_FWHM` x the PSF FWHM)."""
    from .cutout import psf_fwhm_px
    from .residual_sources import NO_PSF_FWHM
    fwhm = psf_fwhm_px(cutout.psf, cutout.psf_oversampling) or NO_PSF_FWHM
    return max(CENTRE_TOLERANCE_PX, CENTRE_TOLERANCE_FWHM * fwhm)


def _swap_flags(flags: int, others: bool) -> int:
    """A swapped row's flags: the bound flags follow the components (the old target's AT_BOUND
    becomes a neighbour's; a neighbour's bound may be the new target's, so it is kept as
    AT_BOUND), plus CENTRE_SWAPPED.  LIGHT_OFF_CUTOUT was judged on the old target and stays:
    it errs on the side of caution, and a swapped row is not clean anyway."""
    target_bound, nb_bound = bool(flags & Flag.AT_BOUND), bool(flags & Flag.NEIGHBOUR_AT_BOUND)
    flags &= ~int(Flag.AT_BOUND | Flag.NEIGHBOUR_AT_BOUND)
    if nb_bound:
        flags |= int(Flag.AT_BOUND) | (int(Flag.NEIGHBOUR_AT_BOUND) if others else 0)
    if target_bound:
        flags |= int(Flag.NEIGHBOUR_AT_BOUND)
    return flags | int(Flag.CENTRE_SWAPPED)


def _recentre(model, cutouts, catalog, rows):
    """``centred=True``: each cutout is centred on its target.  Where the target's fitted centre
    lies beyond :func:`centre_tolerance` of the cutout centre and the cutout centre lies outside
    the target's half-light ellipse (where it has one, with r_e below half the cutout's longer
    side), the fitted Sérsic neighbour nearest the centre, if it lies within the tolerance and
    has not faded away (:data:`FADED_MAG`), becomes the target and the old target a neighbour
    (their columns exchanged; CENTRE_SWAPPED; only for a single-Sérsic target model, whose
    columns a neighbour's match); otherwise the row is flagged CENTRE_OFFSET.  A neighbour
    row's flags are the joint fit's, so they change with the target's."""
    centre = _centre_component(model)
    if centre is None or not len(catalog):
        return catalog, rows
    positioned = [c for c in model.components if {"x", "y"} <= {s.name for s in c.param_specs}]
    swappable = centre.kind == "sersic" and len(positioned) == 1
    values = {p: np.asarray(getattr(catalog[f"{centre.name}_{p}"], "value", catalog[f"{centre.name}_{p}"]), float)
              for p in ("x", "y", "mag", "r_e", "q", "pa") if f"{centre.name}_{p}" in catalog.colnames}
    x, y = values["x"], values["y"]
    shapes = np.array([c.shape for c in cutouts], float)
    cx, cy = (shapes[:, 1] + 1) / 2.0, (shapes[:, 0] + 1) / 2.0
    limits = np.array([centre_tolerance(c) for c in cutouts])
    far = np.hypot(x - cx, y - cy) > limits
    if "r_e" in values:
        # a large galaxy in a cutout not centred on it (an archive's example image, say) still
        # covers the centre: off the target means the centre lies outside the fitted galaxy's
        # half-light ellipse, not merely a few pixels from its centre.  A fit whose r_e ran
        # beyond half the cutout (to its bound, as a target fading away does) covers nothing.
        q = np.clip(values.get("q", np.ones_like(x)), 1e-3, 1.0)
        radius = point_elliptical_radius(cx, cy, x, y, q, values.get("pa", np.zeros_like(x)))
        real = values["r_e"] < 0.5 * shapes.max(axis=1)
        far &= ~((radius <= values["r_e"]) & real)
    by_cutout: dict = {}
    for k, (i, row) in enumerate(rows):
        by_cutout.setdefault(i, []).append(k)
    for i in np.flatnonzero(far):
        best, best_d = None, limits[i]
        for k in by_cutout.get(i, []):
            row = rows[k][1]
            d = math.hypot(row["x"] - cx[i], row["y"] - cy[i])
            # a component that faded away (run towards the magnitude bound) is no object
            faded = not row["mag"] < values["mag"][i] + FADED_MAG
            if row["kind"] == "galaxy" and not faded and d <= best_d:
                best, best_d = k, d
        flags = int(catalog["flags"][i])
        if swappable and best is not None:
            row = rows[best][1]
            for p in NEIGHBOUR_PARAMS:
                for suffix in ("", "_err"):
                    col = f"{centre.name}_{p}{suffix}"
                    old = float(getattr(catalog[col][i], "value", catalog[col][i]))
                    catalog[col][i], row[p + suffix] = row[p + suffix], old
            row["origin"] = "target"
            scale = cutouts[i].pixel_scale if cutouts[i].pixel_scale is not None else math.nan
            for suffix in ("", "_err"):
                col = f"{centre.name}_r_e_arcsec{suffix}"
                if col in catalog.colnames:
                    catalog[col][i] = float(getattr(catalog[f"{centre.name}_r_e{suffix}"][i], "value",
                                                    catalog[f"{centre.name}_r_e{suffix}"][i])) * scale
            flags = _swap_flags(flags, others=len(by_cutout[i]) > 1)
        else:
            flags |= int(Flag.CENTRE_OFFSET)
        catalog["flags"][i] = flags
        for k in by_cutout.get(i, []):
            rows[k][1]["flags"] = flags
    return catalog, rows


def fit_with_neighbours(cutouts, init, neighbours, model: Model | None = None, *,
                        max_neighbours: int | None = None, window: float | None = NEIGHBOUR_WINDOW,
                        growth: float | None = NEIGHBOUR_GROWTH,
                        search: bool = False, search_threshold: float = DEFAULT_THRESHOLD,
                        search_min_dchi2: float = SEARCH_MIN_DCHI2, centred: bool = False, **fit_kwargs):
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
    growth : a neighbour's r_e (a Gaussian star's FWHM) stays below this factor x its start,
        along its start's major axis, and below factor² x along the other if its axes swap
        (> 1; default :data:`NEIGHBOUR_GROWTH`; None = no limit).  Started from its own
        detected pixels, a neighbour left free can swell into a sheet under the cutout that
        takes the sky's and the target's wings' light (:class:`~galmoss_auto.fitting.model.
        Model`'s ``growth``); one that ends on the limit sets NEIGHBOUR_AT_BOUND.  Like
        ``window``, it holds around the start of each fit: a refit after the residual search
        starts from the first fit.  A neighbour started within :data:`EDGE_RE` x its r_e of
        the cutout's edge is exempt (its light runs off the cutout; judged once, from the
        given starts).  (Held-out simulations, 300 cutouts in each of four surveys,
        limit 3 against none: the target's Δmag σ 3-9 % lower, catastrophic fits 63 -> 60 of
        1200; it fails where a bright neighbour's detected pixels understate its size;
        ``benchmarks/neighbour_growth.py``.)
    search : after the fit, look in each cutout's residual for one source the model missed (a
        neighbour the masker merged into the target's footprint, or did not see;
        :mod:`~galmoss_auto.fitting.residual_sources`), add it as a Sérsic neighbour, refit
        that cutout (started from the first fit), and keep the refit where chi² drops by more than
        ``search_min_dchi2`` (> 0; default :data:`SEARCH_MIN_DCHI2`) and the source's n, q and
        r_e are plausible for a separate object (module docstring).  Kept sources have
        ``origin`` "residual" in the neighbours table.
    search_threshold : detection threshold in sigma (> 0; default 4), for the PSF-filtered
        residual and for its lopsided part alike.
    centred : the cutouts are centred on their targets (survey stamps; ``run`` says so): a
        target whose fitted centre ends beyond :func:`centre_tolerance` of the cutout centre
        trades places with a fitted Sérsic neighbour that ends within it (CENTRE_SWAPPED), or
        is flagged CENTRE_OFFSET (module docstring).
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
    if growth is not None and not growth > 1:
        raise ValueError(f"growth must be a factor > 1 (or None), got {growth}")
    limits = (window, growth)
    if search and not search_min_dchi2 > 0:
        raise ValueError(f"search_min_dchi2 must be > 0, got {search_min_dchi2}")
    if search and not search_threshold > 0:
        raise ValueError(f"search_threshold must be > 0 sigma, got {search_threshold}")
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
    # judged once, from the given starts: a refit after the residual search starts from the
    # first fit, where a neighbour held at 3x its size would look like one at the edge
    parsed = [[(k, {**p, "at_edge": _at_edge(p, c.shape)}) for k, p in lst] for c, lst in zip(cutouts, parsed)]
    cols = _init_columns(init, cutouts)
    reference = build_catalog(model, [], {}, None, [], [], [], [], []).colnames
    if not cutouts:
        return build_catalog(model, [], {}, None, [], [], [], [], []), _empty_neighbour_table()

    origins = [["given"] * len(lst) for lst in parsed]
    mains, rows, joints = _fit_groups(model, cutouts, cols, parsed, origins, limits, fit_kwargs, reference)
    catalog = merge_in_order(mains, [c.id for c in cutouts])[reference]
    if search:
        catalog, rows = _search_and_refit(model, cutouts, cols, parsed, origins, limits, fit_kwargs, reference, joints,
                                          catalog, rows, search_threshold, search_min_dchi2)
    if centred:
        catalog, rows = _recentre(model, cutouts, catalog, rows)
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
