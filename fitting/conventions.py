"""The one place where catalog conventions meet the fitter's internal parameters.

Catalog (GALFIT's conventions, what users read and write):
    x, y   1-based pixel coordinates; the centre of the first pixel is (1, 1); x along columns.
    mag    total magnitude, zeropoint - 2.5 log10(total flux in image units).
    r_e, r_s, fwhm, r_out, r_c, r_t   lengths along the major axis, pixels.
    q      axis ratio b/a, 0 < q <= 1.
    pa     degrees counter-clockwise from +y, wrapped to (-90, 90].

Natural (what the renderer takes): x, y 0-based; lengths in pixels; q = b/a may exceed 1 (the
"major" axis is then the other one); pa in radians from +y.

Internal (what the solvers move): natural values with lengths and q as natural logarithms and
angles in radians, so that every parameter is O(1)-scaled and positive quantities stay positive.

A fit that ends with q > 1 is reported with the axes swapped: q -> 1/q, every length -> length*q,
pa -> pa + 90 deg.  That is the only place where parameters of one component mix.
"""

from __future__ import annotations

import math

import torch

__all__ = ["to_internal", "to_natural", "internal_bounds", "natural_to_catalog", "wrap_pa_deg",
           "LOG_KINDS"]

#: kinds fitted as the log of their value
LOG_KINDS = ("length", "ratio")


def to_internal(kind: str, value):
    """Catalog value -> internal value, for one parameter kind (tensor or float)."""
    t = torch.as_tensor(value, dtype=torch.float64)
    if kind == "position":
        return t - 1.0
    if kind in LOG_KINDS:
        return torch.log(t)
    if kind == "angle":
        return torch.deg2rad(t)
    if kind in ("magnitude", "shape", "sky"):
        return t
    raise ValueError(f"unknown parameter kind {kind!r}")


def to_natural(kind: str, value: torch.Tensor) -> torch.Tensor:
    """Internal value -> natural value (what the renderer takes)."""
    if kind in LOG_KINDS:
        return torch.exp(value)
    return value


def internal_bounds(kind: str, lower: float, upper: float) -> tuple[float, float]:
    """Box bounds in internal units.  q is bounded symmetrically in log (q and 1/q are one shape)."""
    if kind == "ratio":
        return math.log(lower), -math.log(lower)
    if kind in LOG_KINDS:
        return (math.log(lower) if lower > 0 else -math.inf), math.log(upper)
    if kind == "position":
        return lower - 1.0, upper - 1.0
    if kind == "angle":
        return math.radians(lower), math.radians(upper)
    return lower, upper


def wrap_pa_deg(pa: torch.Tensor) -> torch.Tensor:
    """Wrap position angles in degrees to (-90, 90]."""
    return 90.0 - torch.remainder(90.0 - pa, 180.0)


def natural_to_catalog(component, natural: dict) -> dict:
    """Natural parameters of one component -> catalog values (differentiable; float64 tensors).

    ``natural`` maps parameter names to tensors of equal shape.
    """
    out = {}
    flip = None
    if getattr(component, "elliptical", False):
        flip = natural["q"] > 1.0
    for spec in component.param_specs:
        v = natural[spec.name]
        if spec.kind == "position":
            v = v + 1.0
        elif spec.kind == "length" and flip is not None:
            v = torch.where(flip, v * natural["q"], v)
        elif spec.kind == "ratio":
            v = torch.where(flip, 1.0 / v, v)
        elif spec.kind == "angle":
            deg = torch.rad2deg(v)
            if flip is not None:
                deg = torch.where(flip, deg + 90.0, deg)
            v = wrap_pa_deg(deg)
        out[spec.name] = v
    return out
