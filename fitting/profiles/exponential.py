"""Exponential disk: I(r) = I_0 exp(-r / r_s).

Parameters: x, y, mag, r_s (scale length along the major axis, pixels, 0.01 <= r_s <= 1e4;
r_e = 1.678347 r_s), q, pa [, c0].
"""

import math

import torch

from .base import EllipticalProfile, ParamSpec

R_S = ParamSpec("r_s", "length", 0.01, 1e4, "pix", "scale length along the major axis")


class Exponential(EllipticalProfile):
    """GALFIT's ``expdisk``."""

    kind = "expdisk"
    shape_specs = (R_S,)

    def log_shape(self, r, p):
        return -r / p["r_s"]

    def log_shape_jet(self, r, p):
        value = -r / p["r_s"]
        return value, value, {"r_s": -value}

    def log_shape_integral(self, p):
        return math.log(2 * math.pi) + 2 * torch.log(p["r_s"])
