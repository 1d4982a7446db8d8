"""de Vaucouleurs profile: a Sérsic profile with n fixed at 4.

Parameters: x, y, mag, r_e (major-axis half-light radius, pixels, 0.01 <= r_e <= 1e4), q, pa [, c0].
"""

import torch

from .sersic import R_E, Sersic


class DeVaucouleurs(Sersic):
    """GALFIT's ``devauc``."""

    kind = "devauc"
    shape_specs = (R_E,)

    def log_shape(self, r, p):
        return super().log_shape(r, {**p, "n": torch.full_like(p["r_e"], 4.0)})

    def log_shape_jet(self, r, p):
        value, slope, derivs = super().log_shape_jet(r, {**p, "n": torch.full_like(p["r_e"], 4.0)})
        return value, slope, {"r_e": derivs["r_e"]}

    def log_shape_integral(self, p):
        return super().log_shape_integral({**p, "n": torch.full_like(p["r_e"], 4.0)})
