"""Moffat: I(r) = I_0 [1 + (r/α)²]^(-β), α = fwhm / (2 sqrt(2^(1/β) - 1)).

Parameters: x, y, mag, fwhm (major axis, pixels, 0.01 <= fwhm <= 1e4), beta (1.01 <= β <= 20;
β > 1 for a finite total flux), q, pa [, c0].
"""

import math

import torch

from .base import EllipticalProfile, ParamSpec

FWHM = ParamSpec("fwhm", "length", 0.01, 1e4, "pix", "full width at half maximum, major axis")
BETA = ParamSpec("beta", "shape", 1.01, 20.0, "", "Moffat power-law index")


def _alpha(p):
    beta = p["beta"]
    return p["fwhm"] / (2 * torch.sqrt(torch.pow(2.0, 1.0 / beta) - 1.0))


class Moffat(EllipticalProfile):
    """GALFIT's ``moffat``."""

    kind = "moffat"
    shape_specs = (FWHM, BETA)

    def log_shape(self, r, p):
        return -p["beta"] * torch.log1p((r / _alpha(p)) ** 2)

    def log_shape_integral(self, p):
        return math.log(math.pi) + 2 * torch.log(_alpha(p)) - torch.log(p["beta"] - 1.0)
