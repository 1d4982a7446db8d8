"""A model: components, which parameters are free, fixed or tied, and their bounds.

Parameter names are ``"<component>.<param>"`` (``"bulge.r_e"``).  Ties follow GALFIT's
constraint file: a parameter may equal another (``Tie("disk.x", "bulge.x")``), differ from it by
an offset (``offset=``, catalog units: pixels, magnitudes, degrees) or be a multiple of it
(``ratio=``; for lengths and q this is a ratio of values).  Every tie is linear in the internal
parameters (lengths and q are fitted as logs, so their ratios become offsets), which makes the
whole map from free to all parameters one affine map, full = A·free + b: the solver works on the
free vector only and the Jacobian is pushed through A exactly.

Box bounds default to each parameter's valid range (see the profile modules); ``bounds=``
narrows them.  A bound must be a pair lower < upper of numbers inside the parameter's valid
range (``ValueError`` naming the parameter and the range otherwise: bounds are never silently
clipped or swapped); a fixed value must lie in that range too.  q may exceed 1 during a fit
(the catalog then swaps the axes), except in a component whose lengths or angle are tied, fixed
or bounded, or whose q has an upper bound below 1: there q stays <= its upper bound, so the
tie or bound means what it says for the catalog's (major-axis) values.  Centres are kept inside
their cutout.  A fit that ends on a bound is flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .conventions import internal_bounds, natural_to_catalog, to_internal, to_natural
from .profiles import FlatSky, Sersic, TiltedSky
from .profiles.base import Component

__all__ = ["Tie", "Model", "default_model", "with_sky", "sky_component", "SKY_KINDS"]

#: Component kinds that model the background.
SKY_KINDS = ("sky", "tiltedsky")


@dataclass(frozen=True)
class Tie:
    """``target`` follows ``source``: equal, plus ``offset``, or times ``ratio`` (not both)."""

    target: str
    source: str
    offset: float | None = None
    ratio: float | None = None

    def __post_init__(self):
        if self.offset is not None and self.ratio is not None:
            raise ValueError(f"tie {self.target} <- {self.source}: give offset or ratio, not both")
        if self.ratio is not None and not self.ratio > 0:
            raise ValueError(f"tie {self.target} <- {self.source}: ratio must be > 0, got {self.ratio}")


class Model:
    """Components plus fixed parameters, ties and bounds.

    components : list of :class:`~galmoss_auto.fitting.profiles.base.Component` with unique names.
    fixed : names of parameters held at their initial value, or a dict name -> value (catalog
        units; None keeps the initial value).
    ties : list of :class:`Tie`.
    bounds : dict name -> (lower, upper) in catalog units, narrowing the defaults.
    windows : dict component name -> half-width (px, > 0): that component's free centre stays
        within this distance (in x and in y) of where the fit started it.  A neighbour fitted
        with the target is started on its own light; without a window a faint one can wander
        onto the target and become its bulge (seen on a real SDSS stamp: 1.85 mag of the
        target's light taken that way).
    growth : dict component name -> factor (> 1): that component's free lengths (r_e, a scale
        length, ...) stay below this factor x where the fit started them (they may shrink
        freely); its axes may swap (a component turning to its light) only as far as the
        same factor, so its major axis stays below factor² x its start.  A neighbour is
        started from its own detected pixels; left free, one beside a bright target can swell
        into a sheet under the whole cutout (seen on a real SDSS stamp: r_e 7800 px, mag 9.7
        beside a mag-17.5 target), taking the sky's and the target's wings' light.
    auxiliary : names of components that are not the target (fitted neighbours): a free
        parameter of theirs ending on a bound sets NEIGHBOUR_AT_BOUND instead of AT_BOUND.
    """

    def __init__(self, components, fixed=None, ties=None, bounds=None, windows=None, auxiliary=(), growth=None):
        self.components: list[Component] = list(components)
        names = [c.name for c in self.components]
        if len(set(names)) != len(names):
            raise ValueError(f"component names must be unique, got {names}")
        if not self.components:
            raise ValueError("a model needs at least one component")
        self.by_name = {c.name: c for c in self.components}
        self.params = [(c, s) for c in self.components for s in c.param_specs]
        self.full_names = [f"{c.name}.{s.name}" for c, s in self.params]
        index = {n: i for i, n in enumerate(self.full_names)}
        if isinstance(fixed, dict):
            self.fixed = dict(fixed)
        else:
            self.fixed = {n: None for n in (fixed or [])}
        self.ties = list(ties or [])
        self.bounds = dict(bounds or {})
        for name in [*self.fixed, *self.bounds, *(t.target for t in self.ties), *(t.source for t in self.ties)]:
            if name not in index:
                raise KeyError(f"unknown parameter {name!r}; the model has {', '.join(self.full_names)}")
        self.bounds = {name: _checked_bounds(name, self.params[index[name]][1], pair)
                       for name, pair in self.bounds.items()}
        self.windows = _per_component(windows, names, "window", "a centre window must be a half-width > 0 px",
                                      lambda v: v > 0)
        self.growth = _per_component(growth, names, "growth limit", "a growth limit must be a factor > 1",
                                     lambda v: v > 1)
        self.auxiliary = tuple(dict.fromkeys(auxiliary or ()))
        unknown = [n for n in self.auxiliary if n not in self.by_name]
        if unknown:
            raise KeyError(f"auxiliary components {unknown} are not in the model ({', '.join(names)})")
        for name, value in self.fixed.items():
            if value is not None:
                _check_value(name, self.params[index[name]][1], value, "fixed value")
        tied = {t.target: t for t in self.ties}
        for t in self.ties:
            if t.source in tied or t.source in self.fixed:
                raise ValueError(f"tie {t.target} <- {t.source}: the source must be a free parameter")
            if t.target in self.fixed:
                raise ValueError(f"{t.target} is both fixed and tied")
            kind_t, kind_s = self.params[index[t.target]][1].kind, self.params[index[t.source]][1].kind
            if kind_t != kind_s:
                raise ValueError(f"tie {t.target} <- {t.source}: parameters of different kinds "
                                 f"({kind_t}, {kind_s})")
        self.free_names = [n for n in self.full_names if n not in self.fixed and n not in tied]
        free_index = {n: i for i, n in enumerate(self.free_names)}
        P, F = len(self.full_names), len(self.free_names)
        A = torch.zeros(P, F, dtype=torch.float64)
        offset = torch.zeros(P, dtype=torch.float64)
        for i, name in enumerate(self.full_names):
            if name in free_index:
                A[i, free_index[name]] = 1.0
            elif name in tied:
                t = tied[name]
                kind = self.params[i][1].kind
                j = free_index[t.source]
                if t.ratio is not None and kind in ("length", "ratio"):
                    A[i, j], offset[i] = 1.0, math.log(t.ratio)
                elif t.ratio is not None:
                    A[i, j] = t.ratio
                else:
                    A[i, j] = 1.0
                    off = t.offset or 0.0
                    offset[i] = math.radians(off) if kind == "angle" else off
        self.A, self.tie_offset = A, offset
        self.fixed_mask = torch.tensor([n in self.fixed for n in self.full_names])
        self.kinds = [s.kind for _, s in self.params]

    # -- names and shapes ----------------------------------------------------------------------
    @property
    def n_free(self) -> int:
        return len(self.free_names)

    @property
    def has_point_source(self) -> bool:
        return any(c.point_like for c in self.components)

    def __repr__(self):
        return f"Model({self.components!r}, free={self.free_names})"

    # -- initial values ------------------------------------------------------------------------
    def initial_full(self, init: dict, cutouts) -> torch.Tensor:
        """Internal values of all parameters, (B, P), from an init table in catalog conventions.

        ``init`` maps column names ``<component>_<param>`` to arrays (one value per cutout).
        Columns it lacks get a generic guess from the image (centre, total flux, a tenth of the
        image size, n = 2.5, q = 0.8, pa = 0, sky = 0); a value in ``fixed`` overrides both.
        """
        B = len(cutouts)
        out = torch.empty(B, len(self.full_names), dtype=torch.float64)
        for i, ((comp, spec), name) in enumerate(zip(self.params, self.full_names)):
            column = f"{comp.name}_{spec.name}"
            fixed_value = self.fixed.get(name)
            if fixed_value is not None:
                values = np.full(B, float(fixed_value))
            elif column in init:
                values = np.asarray(init[column], dtype=np.float64).reshape(-1)
                if values.size != B:
                    raise ValueError(f"initial-guess column {column!r} has {values.size} rows for {B} cutouts")
            else:
                values = np.array([_generic_guess(spec, c, comp) for c in cutouts])
            bad = ~np.isfinite(values)
            if bad.any():
                values = values.copy()
                values[bad] = [_generic_guess(spec, c, comp) for c, b in zip(cutouts, bad) if b]
            if spec.kind == "ratio":
                values = np.clip(values, spec.lower, 1.0 / spec.lower)
            elif spec.kind == "length":
                values = np.clip(values, spec.lower, spec.upper)
            elif spec.kind == "shape":
                values = np.clip(values, spec.lower, spec.upper)
            out[:, i] = to_internal(spec.kind, torch.as_tensor(values))
        return out

    def split(self, full: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(free values, constant part b) such that full = free @ A.T + b."""
        free_cols = [self.full_names.index(n) for n in self.free_names]
        free = full[:, free_cols]
        b = full.clone()
        b[:, ~self.fixed_mask] = 0.0
        b = b + self.tie_offset.to(full)
        return free, b

    def expand(self, free: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """All internal parameters (B, P) from the free ones (B, F)."""
        return free @ self.A.to(free).T + b

    def internal_bounds(self, cutouts) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-galaxy box bounds (B, F) of the free parameters, internal units."""
        B = len(cutouts)
        # a component whose lengths or angle are tied or fixed may not swap its axes (q > 1),
        # or the tie would hold for the swapped axis: its q is bounded by 1
        constrained = {n.split(".")[0] for n in [*self.fixed, *self.bounds, *(t.target for t in self.ties),
                                                 *(t.source for t in self.ties)]
                       if self.params[self.full_names.index(n)][1].kind in ("length", "angle")}
        lo = torch.empty(B, self.n_free, dtype=torch.float64)
        hi = torch.empty(B, self.n_free, dtype=torch.float64)
        for j, name in enumerate(self.free_names):
            comp, spec = self.params[self.full_names.index(name)]
            lower, upper = self.bounds.get(name, (spec.lower, spec.upper))
            a, b = internal_bounds(spec.kind, lower, upper)
            if spec.kind == "position":
                extent = np.array([c.shape[1] if spec.name == "x" else c.shape[0] for c in cutouts], float)
                lo[:, j] = torch.as_tensor(np.maximum(a, -0.5))
                hi[:, j] = torch.as_tensor(np.minimum(b, extent - 0.5))
            else:
                if spec.kind == "ratio" and (comp.name in constrained or upper < 1.0):
                    b = math.log(upper)            # no axis swap: q itself stays <= upper
                lo[:, j], hi[:, j] = a, b
        return lo, hi

    @property
    def auxiliary_free(self) -> torch.Tensor:
        """(F,) bool: the free parameters that belong to :attr:`auxiliary` components."""
        return torch.tensor([n.split(".", 1)[0] in self.auxiliary for n in self.free_names], dtype=torch.bool)

    @property
    def magnitude_free(self) -> torch.Tensor:
        """(F,) bool: the free parameters that are magnitudes."""
        kinds = dict(zip(self.full_names, self.kinds))
        return torch.tensor([kinds[n] == "magnitude" for n in self.free_names], dtype=torch.bool)

    @property
    def same_component(self) -> torch.Tensor:
        """(F, F) float64: 1 where two free parameters belong to the same component."""
        comp = [n.split(".", 1)[0] for n in self.free_names]
        return torch.tensor([[float(a == b) for b in comp] for a in comp], dtype=torch.float64)

    def window_bounds(self, free0: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """``lower``, ``upper`` (B, F, internal units) narrowed around the starting free
        parameters ``free0`` (B, F): each windowed component's free x and y stay within its
        half-width of their start (:attr:`windows`), each growth-limited component's free
        lengths below its factor x their start and its internal q (past 1 where the axes
        swap) below the factor (:attr:`growth`; lengths and q are internally logarithms), all
        inside the old bounds."""
        if not self.windows and not self.growth:
            return lower, upper
        lower, upper = lower.clone(), upper.clone()
        for j, name in enumerate(self.free_names):
            comp = name.split(".", 1)[0]
            kind = self.params[self.full_names.index(name)][1].kind
            half = self.windows.get(comp) if kind == "position" else None
            if half is not None:
                lower[:, j] = torch.clamp(torch.maximum(lower[:, j], free0[:, j] - half), max=free0[:, j])
                upper[:, j] = torch.clamp(torch.minimum(upper[:, j], free0[:, j] + half), min=free0[:, j])
            factor = self.growth.get(comp)
            if factor is not None and kind == "length":
                upper[:, j] = torch.clamp(torch.minimum(upper[:, j], free0[:, j] + math.log(factor)), min=free0[:, j])
            elif factor is not None and kind == "ratio":
                # q may pass 1 (the axes swap: the major axis is then r_e x q), so that a
                # component started across its light can still turn; but only up to the
                # factor, or it would escape the limit that way.  (q <= 1 instead stuck such
                # components at q = 1, where the angle is undefined: covariances failed.)
                upper[:, j] = torch.clamp(torch.minimum(upper[:, j], torch.full_like(upper[:, j], math.log(factor))),
                                          min=free0[:, j])
        return lower, upper

    # -- conversions ---------------------------------------------------------------------------
    def natural(self, full: torch.Tensor) -> dict:
        """{component: {param: (B,) tensor}} in natural units, from internal (B, P)."""
        out = {c.name: {} for c in self.components}
        for i, (comp, spec) in enumerate(self.params):
            out[comp.name][spec.name] = to_natural(spec.kind, full[:, i])
        return out

    def catalog_values(self, full: torch.Tensor) -> dict:
        """{"<component>_<param>": (B,) tensor} in catalog units, from internal (B, P)."""
        nat = self.natural(full)
        out = {}
        for comp in self.components:
            for name, v in natural_to_catalog(comp, nat[comp.name]).items():
                out[f"{comp.name}_{name}"] = v
        return out

    @property
    def catalog_columns(self) -> list[tuple[str, Component, object]]:
        return [(f"{c.name}_{s.name}", c, s) for c, s in self.params]


def _per_component(values, names: list, what: str, requirement: str, valid) -> dict:
    """{component name: float} from ``values`` (a dict or None), each name one of ``names``
    (else KeyError naming ``what``) and each value finite and ``valid`` (else ValueError
    stating the ``requirement``)."""
    out = {}
    for name, given in dict(values or {}).items():
        if name not in names:
            raise KeyError(f"{what} for unknown component {name!r}; the model has {', '.join(names)}")
        try:
            value = float(given)
        except (TypeError, ValueError):
            value = math.nan
        if not (math.isfinite(value) and valid(value)):
            raise ValueError(f"{name}: {requirement}, got {given!r}")
        out[name] = value
    return out


def _check_value(name: str, spec, value, what: str) -> float:
    """``value`` as a float inside ``spec``'s valid range, else ValueError naming the bound."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {what} must be a number, got {value!r}") from None
    # an infinite bound is legal where the valid range is unbounded (sky, position); a value is not
    if math.isnan(v) or (math.isinf(v) and "bound" not in what):
        raise ValueError(f"{name}: {what} {v} is not finite")
    if v < spec.lower:
        raise ValueError(f"{name}: {what} {v} is below the valid lower bound {spec.lower} "
                         f"(valid range [{spec.lower}, {spec.upper}])")
    if v > spec.upper:
        raise ValueError(f"{name}: {what} {v} is above the valid upper bound {spec.upper} "
                         f"(valid range [{spec.lower}, {spec.upper}])")
    return v


def _checked_bounds(name: str, spec, pair) -> tuple[float, float]:
    """A user bound (lower, upper): two numbers, lower < upper, both inside the valid range."""
    try:
        lo, hi = pair
    except (TypeError, ValueError):
        raise ValueError(f"{name}: bounds must be a pair (lower, upper), got {pair!r}") from None
    lo = _check_value(name, spec, lo, "lower bound")
    hi = _check_value(name, spec, hi, "upper bound")
    if not lo < hi:
        raise ValueError(f"{name}: lower bound {lo} must be below upper bound {hi} (inverted or empty bounds)")
    return lo, hi


def default_model() -> Model:
    """One Sérsic component named ``sersic``: the default of ``fit`` and ``galmoss-auto run``."""
    return Model([Sersic("sersic")])


def with_sky(model: Model, sky: str) -> Model:
    """``model`` with a background component added: FlatSky (``sky="flat"``) or TiltedSky
    (``"tilted"``), named ``sky`` (``sky2``, ... when that name is taken).  ``"none"``, or a
    model that already has a sky component, returns ``model`` itself."""
    if sky not in ("none", "flat", "tilted"):
        raise ValueError(f"sky must be 'none', 'flat' or 'tilted', got {sky!r}")
    if sky == "none" or sky_component(model) is not None:
        return model
    names = {c.name for c in model.components}
    name = "sky" if "sky" not in names else next(f"sky{k}" for k in range(2, 99) if f"sky{k}" not in names)
    comp = FlatSky(name) if sky == "flat" else TiltedSky(name)
    return Model(model.components + [comp], fixed=model.fixed, ties=model.ties, bounds=model.bounds,
                 windows=model.windows, auxiliary=model.auxiliary, growth=model.growth)


def sky_component(model: Model):
    """The model's background component (FlatSky or TiltedSky), or None."""
    return next((c for c in model.components if c.kind in SKY_KINDS), None)


def _generic_guess(spec, cutout, comp) -> float:
    """A starting value for a parameter the init table lacks, from the cutout alone."""
    h, w = cutout.shape
    if spec.kind == "position":
        return (w + 1) / 2.0 if spec.name == "x" else (h + 1) / 2.0
    if spec.kind == "magnitude":
        good = ~cutout.mask
        total = float(np.sum(cutout.image[good])) * cutout.image.size / max(good.sum(), 1)
        return cutout.zeropoint - 2.5 * math.log10(max(total, 1e-30))
    if spec.kind == "length":
        return {"r_t": 0.5, "r_out": 0.25}.get(spec.name, 0.1) * min(h, w)
    if spec.kind == "ratio":
        return 0.8
    if spec.kind == "angle":
        return 0.0
    if spec.kind == "sky":
        return 0.0
    return {"n": 2.5, "beta": 3.0, "alpha": 2.0, "c0": 0.0}.get(spec.name, 0.5 * (spec.lower + spec.upper))
