"""Gaussian: I(r) = I_0 exp(-r² / 2σ²), σ = fwhm / (2 sqrt(2 ln 2)).

Parameters: x, y, mag, fwhm (major axis, pixels, 0.01 <= fwhm <= 1e4), q, pa [, c0].
"""

import math

import torch

from .base import SQRT_2LN2, EllipticalProfile, ParamSpec

FWHM = ParamSpec("fwhm", "length", 0.01, 1e4, "pix", "full width at half maximum, major axis")


class Gaussian(EllipticalProfile):
    """GALFIT's ``gaussian``."""

    kind = "gaussian"
    shape_specs = (FWHM,)

    def log_shape(self, r, p):
        sigma = p["fwhm"] / (2 * SQRT_2LN2)
        return -0.5 * (r / sigma) ** 2

    def log_shape_jet(self, r, p):
        value = self.log_shape(r, p)
        return value, 2.0 * value, {"fwhm": -2.0 * value}

    def log_shape_integral(self, p):
        sigma = p["fwhm"] / (2 * SQRT_2LN2)
        return math.log(2 * math.pi) + 2 * torch.log(sigma)
