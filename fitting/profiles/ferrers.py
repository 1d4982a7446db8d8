"""Ferrers profile: I(r) = I_0 [1 - (r/r_out)^(2-β)]^α for r < r_out, 0 beyond.

Parameters: x, y, mag, r_out (truncation radius along the major axis, pixels, 0.1 <= r_out <= 1e4),
alpha (outer sharpness, 0.01 <= α <= 10), beta (central slope, 0 <= β <= 1.9), q, pa [, c0].
Total flux: 2π r_out² B(2/(2-β), α+1) / (2-β) times I_0 q / R(c0).
"""

import math

import torch

from .base import EllipticalProfile, ParamSpec

R_OUT = ParamSpec("r_out", "length", 0.1, 1e4, "pix", "outer truncation radius, major axis")
ALPHA = ParamSpec("alpha", "shape", 0.01, 10.0, "", "outer truncation sharpness")
BETA = ParamSpec("beta", "shape", 0.0, 1.9, "", "central slope")


class Ferrers(EllipticalProfile):
    """GALFIT's ``ferrer``."""

    kind = "ferrer"
    shape_specs = (R_OUT, ALPHA, BETA)

    def log_shape(self, r, p):
        s = torch.pow(torch.clamp(r / p["r_out"], max=1.0), 2.0 - p["beta"])
        inside = torch.log(torch.clamp(1.0 - s, min=1e-30)) * p["alpha"]
        return torch.where(r < p["r_out"], inside, torch.full_like(inside, -1e4))

    def log_shape_integral(self, p):
        e = 2.0 - p["beta"]
        a, b = 2.0 / e, p["alpha"] + 1.0
        log_beta = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
        return math.log(2 * math.pi) + 2 * torch.log(p["r_out"]) - torch.log(e) + log_beta

    def outer_radius(self, p):
        return p["r_out"]

    def characteristic_radius(self, p):
        return 0.5 * p["r_out"]
