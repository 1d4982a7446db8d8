"""What every model component shares: parameter declarations and the elliptical machinery.

A component declares its parameters as :class:`ParamSpec` (catalog name, kind, bounds, unit).
The *kind* fixes how the fitter represents the parameter internally (see
:mod:`galmoss_auto.fitting.conventions`).  Elliptical profiles describe only their radial shape
``log_shape(r)`` (unnormalised, natural log) and its integral ``log_shape_integral`` =
log ∫ shape(r) 2πr dr; the total-magnitude normalisation, the ellipse, GALFIT's C0 boxiness,
sub-pixel integration and PSF convolution are done once, for all of them, by the renderer.

Parameters reach the profile functions as a dict of tensors of shape (B, 1, 1) (one value per
galaxy, broadcastable over pixels) in *natural* units: x, y 0-based pixels, mag, lengths in
pixels, q = b/a (may exceed 1 during a fit), pa in radians counter-clockwise from +y, c0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["ParamSpec", "Component", "EllipticalProfile", "boxiness_area_ratio", "gauss_legendre"]

SQRT_2LN2 = math.sqrt(2.0 * math.log(2.0))


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a component.

    name : catalog name (``x``, ``mag``, ``r_e`` ...).
    kind : ``position`` (pixels, 1-based in the catalog), ``magnitude``, ``length`` (pixels,
        fitted as its log), ``shape`` (dimensionless, fitted as is), ``ratio`` (q, fitted as its
        log), ``angle`` (degrees CCW from +y in the catalog, radians inside), ``sky``
        (image units per pixel, or per pixel per pixel for gradients).
    lower, upper : default box bounds in catalog units.
    unit : astropy unit string of the catalog column.
    """

    name: str
    kind: str
    lower: float
    upper: float
    unit: str
    doc: str = ""


def position_specs() -> tuple[ParamSpec, ...]:
    return (ParamSpec("x", "position", -math.inf, math.inf, "pix", "centre, 1-based column"),
            ParamSpec("y", "position", -math.inf, math.inf, "pix", "centre, 1-based row"))


MAG = ParamSpec("mag", "magnitude", -40.0, 60.0, "mag", "total magnitude, zeropoint - 2.5 log10(flux)")
Q = ParamSpec("q", "ratio", 0.02, 1.0, "", "axis ratio b/a")
PA = ParamSpec("pa", "angle", -math.inf, math.inf, "deg", "position angle, CCW from +y")
C0 = ParamSpec("c0", "shape", -1.5, 2.0, "", "GALFIT boxiness: < 0 disky, > 0 boxy")


class Component:
    """A model component: a named instance of a profile type.

    Subclasses set ``kind`` (GALFIT's name), ``param_specs`` and ``convolved`` (False for the
    sky, which GALFIT does not convolve with the PSF).
    """

    kind: str = ""
    param_specs: tuple[ParamSpec, ...] = ()
    convolved: bool = True
    elliptical: bool = False
    point_like: bool = False

    def __init__(self, name: str | None = None):
        self.name = name or self.kind
        if not self.name.isidentifier():
            raise ValueError(f"component name {self.name!r} must be a Python identifier "
                             "(it becomes a catalog column prefix)")

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.param_specs)

    def spec(self, name: str) -> ParamSpec:
        for p in self.param_specs:
            if p.name == name:
                return p
        raise KeyError(f"component {self.name!r} ({self.kind}) has no parameter {name!r}; "
                       f"it has {', '.join(self.param_names)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class EllipticalProfile(Component):
    """A radial profile on generalised ellipses: x, y, mag, <shape parameters>, q, pa [, c0].

    ``boxy=True`` adds GALFIT's C0 boxiness parameter: the radius is
    r = (|u|^(c0+2) + |v/q|^(c0+2))^(1/(c0+2)), with u along the major axis.
    """

    elliptical = True
    #: the profile's own parameters, between ``mag`` and ``q``
    shape_specs: tuple[ParamSpec, ...] = ()

    def __init__(self, name: str | None = None, boxy: bool = False):
        super().__init__(name)
        self.boxy = boxy
        self.param_specs = (*position_specs(), MAG, *self.shape_specs, Q, PA) + ((C0,) if boxy else ())

    # -- to be provided by each profile -------------------------------------------------------
    def log_shape(self, r: torch.Tensor, p: dict) -> torch.Tensor:
        """log of the unnormalised surface brightness at elliptical radius ``r`` (pixels)."""
        raise TypeError(f"{type(self).__name__} must define log_shape")

    def log_shape_integral(self, p: dict) -> torch.Tensor:
        """log ∫_0^∞ exp(log_shape(r)) 2πr dr for a circular profile (q = 1, c0 = 0)."""
        raise TypeError(f"{type(self).__name__} must define log_shape_integral")

    def log_shape_jet(self, r: torch.Tensor, p: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """log_shape at ``r``, its slope d log_shape / d ln r, and {name: d log_shape / d θ} for
        the profile's own parameters θ in *internal* units (d/d ln L for a length L).

        Used by the analytic Jacobian.  This generic version uses forward-mode automatic
        differentiation; profiles override it with closed forms that share the work.
        """
        from torch.func import jvp

        value, slope = jvp(lambda ln_r: self.log_shape(torch.exp(ln_r), p), (torch.log(r),),
                           (torch.ones_like(r),))
        derivs = {}
        for spec in self.shape_specs:
            v = p[spec.name]
            tangent = v if spec.kind == "length" else torch.ones_like(v)
            _, derivs[spec.name] = jvp(lambda t, name=spec.name: self.log_shape(r, {**p, name: t}),
                                       (v,), (tangent,))
        return value, slope, derivs

    def outer_radius(self, p: dict) -> torch.Tensor | None:
        """Elliptical radius beyond which the profile is zero (truncated profiles), else None."""
        return None

    # -- shared -------------------------------------------------------------------------------
    def log_amplitude(self, p: dict, zeropoint: torch.Tensor) -> torch.Tensor:
        """log of the factor that turns exp(log_shape) into surface brightness (flux / pixel²)."""
        log_flux = (zeropoint - p["mag"]) * (0.4 * math.log(10.0))
        log_area = torch.log(p["q"]) - torch.log(boxiness_area_ratio(p.get("c0")))
        return log_flux - log_area - self.log_shape_integral(p)

    def characteristic_radius(self, p: dict) -> torch.Tensor:
        """A size (pixels) that sets how far out sub-pixel sampling is needed."""
        return p[self.shape_specs[0].name]


def boxiness_area_ratio(c0: torch.Tensor | None) -> torch.Tensor | float:
    """GALFIT's R(c0): area of the generalised ellipse relative to the ellipse (1 at c0 = 0)."""
    if c0 is None:
        return torch.tensor(1.0)
    e = 1.0 / (c0 + 2.0)
    log_beta = torch.lgamma(e) + torch.lgamma(1.0 + e) - torch.lgamma(1.0 + 2.0 * e)
    return math.pi * (c0 + 2.0) / (4.0 * torch.exp(log_beta))


_GL_CACHE: dict = {}


def gauss_legendre(n: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of n-point Gauss–Legendre quadrature on [0, 1]."""
    key = (n, dtype, str(device))
    if key not in _GL_CACHE:
        import numpy as np

        x, w = np.polynomial.legendre.leggauss(n)
        _GL_CACHE[key] = (torch.tensor((x + 1) / 2, dtype=dtype, device=device),
                          torch.tensor(w / 2, dtype=dtype, device=device))
    return _GL_CACHE[key]


def log_radial_integral(log_f, r_max: torch.Tensor, n_nodes: int = 96, span: float = 30.0) -> torch.Tensor:
    """log ∫_0^r_max exp(log_f(r)) 2πr dr by Gauss–Legendre in ln r over [ln r_max - span, ln r_max].

    ``r_max`` has shape (B, 1, 1); ``log_f`` maps radii of shape (B, 1, n_nodes) to logs.
    Integrating in ln r handles central cusps (Sérsic n up to 10) that defeat uniform sampling.
    """
    x, w = gauss_legendre(n_nodes, r_max.dtype, r_max.device)
    t = torch.log(r_max) + span * (x - 1.0)
    r = torch.exp(t)
    log_integrand = log_f(r) + 2.0 * t + math.log(2.0 * math.pi) + math.log(span)
    return torch.logsumexp(log_integrand + torch.log(w), dim=-1, keepdim=True)
