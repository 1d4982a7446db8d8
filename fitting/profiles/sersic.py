"""Sérsic profile: I(r) = I_e exp(-b_n [(r/r_e)^(1/n) - 1]).

Parameters: x, y, mag (total), r_e (half-light radius along the major axis, pixels,
0.01 <= r_e <= 1e4), n (0.2 <= n <= 10), q, pa [, c0].  b_n is exact (see
:mod:`galmoss_auto.fitting.sersic_bn`) and differentiable in n.
"""

import math

import torch

from ..sersic_bn import sersic_bn
from .base import EllipticalProfile, ParamSpec

R_E = ParamSpec("r_e", "length", 0.01, 1e4, "pix", "half-light radius along the major axis")
N = ParamSpec("n", "shape", 0.2, 10.0, "", "Sérsic index")


class Sersic(EllipticalProfile):
    """GALFIT's ``sersic``."""

    kind = "sersic"
    shape_specs = (R_E, N)

    def log_shape(self, r, p):
        n = p["n"]
        return -sersic_bn(n) * (torch.pow(r / p["r_e"], 1.0 / n) - 1.0)

    def log_shape_jet(self, r, p):
        n, r_e = p["n"], p["r_e"]
        with torch.enable_grad():
            n_leaf = n.detach().requires_grad_(True)
            b = sersic_bn(n_leaf)
            db_dn, = torch.autograd.grad(b.sum(), n_leaf)
        b = b.detach()
        x = r / r_e
        t = torch.pow(x, 1.0 / n)                     # (r / r_e)^(1/n)
        bt_n = t * (b / n)
        value = b - b * t
        # d/d ln r_e = -d/d ln r = b t / n;  d/dn = -b'(t - 1) + b t ln(r / r_e) / n²
        # (ln(r / r_e), not ln t: t underflows to 0 near the centre for small n)
        d_n = db_dn * (1.0 - t) + bt_n * torch.log(x) / n
        return value, -bt_n, {"r_e": bt_n, "n": d_n}

    def log_shape_integral(self, p):
        n, r_e = p["n"], p["r_e"]
        b = sersic_bn(n)
        return (math.log(2 * math.pi) + 2 * torch.log(r_e) + torch.log(n) + b
                - 2 * n * torch.log(b) + torch.lgamma(2 * n))
