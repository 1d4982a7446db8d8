"""Modified King profile (Elson 1999; GALFIT's ``king``), normalised to I(0) = 1 before scaling:

I(r) ∝ [ (1 + (r/r_c)²)^(-1/α) - (1 + (r_t/r_c)²)^(-1/α) ]^α  for r < r_t, 0 beyond.

Parameters: x, y, mag, r_c (core radius, pixels, 0.01 <= r_c <= 1e4), r_t (tidal radius, pixels,
must exceed r_c; a fit that drives r_t below 1.001 r_c is held there), alpha (0.1 <= α <= 10;
α = 2 is the classical King profile), q, pa [, c0].  The total flux is integrated numerically.
"""

import torch

from .base import EllipticalProfile, ParamSpec, log_radial_integral

R_C = ParamSpec("r_c", "length", 0.01, 1e4, "pix", "core radius, major axis")
R_T = ParamSpec("r_t", "length", 0.02, 1e5, "pix", "tidal (truncation) radius, major axis")
ALPHA = ParamSpec("alpha", "shape", 0.1, 10.0, "", "power-law index (2 = classical King)")


def _r_t(p):
    return torch.maximum(p["r_t"], 1.001 * p["r_c"])


class ModifiedKing(EllipticalProfile):
    """GALFIT's ``king``."""

    kind = "king"
    shape_specs = (R_C, R_T, ALPHA)

    def log_shape(self, r, p):
        inv_a = 1.0 / p["alpha"]
        r_t = _r_t(p)
        edge = torch.pow(1.0 + (r_t / p["r_c"]) ** 2, -inv_a)
        inner = torch.pow(1.0 + (torch.clamp(r, max=r_t) / p["r_c"]) ** 2, -inv_a) - edge
        norm = 1.0 - edge
        value = p["alpha"] * (torch.log(torch.clamp(inner, min=1e-30)) - torch.log(norm))
        return torch.where(r < r_t, value, torch.full_like(value, -1e4))

    def log_shape_integral(self, p):
        r_t = _r_t(p)
        return log_radial_integral(lambda r: self.log_shape(r, p), r_t, n_nodes=128, span=12.0)

    def outer_radius(self, p):
        return _r_t(p)
