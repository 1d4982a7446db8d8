"""Sérsic index and half-light radius from radii measured inside a circular aperture (batched).

The initial-guess network's residual form starts from cheap measurements of each crop
(:func:`~galmoss_auto.initnet.inputs.baseline_coords`): R50 and R90, the radii enclosing 50 % and
90 % of the flux inside an aperture of radius ``R_ap``.  For a circular Sérsic profile of index
n and half-light radius r_e the aperture holds the fraction ``F(n, X) = P(2n, b_n X^(1/n))`` of
the light (``X = R_ap / r_e``, P the regularised lower incomplete gamma function), and

    R_f / r_e = x(n, f F(n, X)),   x(n, g) = (P^-1(2n, g) / b_n)^n,

so the measured concentration ``R90 / R50`` depends on X as well as on n: a fixed aperture
around a large galaxy lowers it (the untruncated relation, as in
:func:`~galmoss_auto.initnet.conventions.n_from_concentration`, then underestimates n).
:func:`sersic_from_aperture_radii` inverts both relations at once, with no iteration, through
a table over (n, aperture / R50) computed once per device (~0.4 s); it recovers n and r_e to
2 % for aperture / r_e >= 1.

Valid ranges: n in [:data:`N_LO`, :data:`N_HI`] = [0.3, 6] (answers are clipped to it),
aperture / R50 in [1.2, 60] (clamped to it).  The PSF is not part of the model: remove it from
the radii first (in quadrature, a fair approximation for a starting guess).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .conventions import _gammaincinv

__all__ = ["N_LO", "N_HI", "aperture_fraction", "sersic_from_aperture_radii"]

N_LO, N_HI = 0.3, 6.0
_X_LO, _X_HI = 0.3, 200.0
_Y_LO, _Y_HI = 1.2, 60.0
_KN, _KY = 64, 64


def _b_n(n: torch.Tensor) -> torch.Tensor:
    # exact (P(2n, b_n) = 1/2): the asymptotic series is 0.3 % off in flux at n = 0.3
    return _gammaincinv(2.0 * n, 0.5, iters=60)


def aperture_fraction(n: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Fraction of a circular Sérsic profile's light inside ``x`` half-light radii (> 0)."""
    return torch.special.gammainc(2.0 * n, _b_n(n) * x ** (1.0 / n))


@functools.lru_cache(maxsize=4)
def _table(device: str):
    """(ln n grid (KN,), ln Y grid (KY,), ln C (KN, KY), ln(R50 / r_e) (KN, KY)) in float32 on
    ``device``, with Y = aperture / R50 the *measured* quantity, so that no iteration is needed:
    on a fine X grid per n, Y(n, X) = X / (R50 / r_e)(n, X) rises monotonically from ~sqrt 2
    (a profile flat inside the aperture) to X (all light inside), and is inverted along X."""
    ln_n = np.linspace(math.log(N_LO), math.log(N_HI), _KN)
    ln_x = np.linspace(math.log(_X_LO), math.log(_X_HI), 240)
    n = torch.as_tensor(np.exp(ln_n))[:, None].expand(-1, ln_x.size)
    X = torch.as_tensor(np.exp(ln_x))[None, :].expand(ln_n.size, -1)
    total = aperture_fraction(n, X)
    b = _b_n(n)
    radius = lambda g: (_gammaincinv(2.0 * n, g) / b) ** n      # x with P(2n, b x^(1/n)) = g
    ln_r50 = torch.log(radius(0.5 * total)).numpy()
    ln_c = torch.log(radius(0.9 * total)).numpy() - ln_r50
    ln_y_of_x = ln_x[None, :] - ln_r50
    ln_y = np.linspace(math.log(_Y_LO), math.log(_Y_HI), _KY)
    c_tab = np.stack([np.interp(ln_y, ln_y_of_x[i], ln_c[i]) for i in range(_KN)])
    r_tab = np.stack([np.interp(ln_y, ln_y_of_x[i], ln_r50[i]) for i in range(_KN)])
    return tuple(torch.as_tensor(t, dtype=torch.float32, device=device)
                 for t in (ln_n, ln_y, c_tab, r_tab))


def _interp_cols(table: torch.Tensor, grid: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Columns of ``table`` (K, M) on a uniform ``grid`` (M,), linearly interpolated at
    ``value`` (B,) (clamped to the grid) -> (B, K)."""
    t = (value.clamp(float(grid[0]), float(grid[-1])) - grid[0]) / (grid[1] - grid[0])
    k = t.floor().long().clamp(0, grid.numel() - 2)
    w = (t - k)[:, None]
    return table[:, k].T * (1 - w) + table[:, k + 1].T * w


def sersic_from_aperture_radii(r50: torch.Tensor, r90: torch.Tensor,
                               aperture: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, r_e) of the circular Sérsic profile whose radii enclosing 50 % and 90 % of its
    light inside ``aperture`` (px) are ``r50``, ``r90`` (B,) px (PSF already removed).

    n is read from the measured concentration along the table's row at Y = aperture / r50,
    then r_e = r50 / (R50 / r_e)(n, Y).  n is clipped to [0.3, 6]: concentrations beyond the
    table's ends give its end values."""
    if not aperture > 0:
        raise ValueError(f"aperture must be > 0 px, got {aperture}")
    ln_n_grid, ln_y_grid, ln_c, ln_ratio = _table(str(r50.device))
    r50 = r50.to(torch.float32).clamp(min=0.1)
    ln_y = math.log(aperture) - torch.log(r50)
    rows = torch.cummax(_interp_cols(ln_c, ln_y_grid, ln_y), dim=1).values   # rising in n
    v = torch.log((r90.to(torch.float32) / r50).clamp(min=1.05))[:, None]
    v = v.clamp(rows[:, :1], rows[:, -1:])
    k = torch.searchsorted(rows.contiguous(), v.contiguous()).clamp(1, rows.shape[1] - 1)
    lo, hi = rows.gather(1, k - 1), rows.gather(1, k)
    w = ((v - lo) / (hi - lo).clamp(min=1e-9)).clamp(0, 1)
    ln_n = (ln_n_grid[k - 1] + w * (ln_n_grid[k] - ln_n_grid[k - 1]))[:, 0]
    ratio = _interp_cols(ln_ratio, ln_y_grid, ln_y)
    r = ratio.gather(1, k - 1) * (1 - w) + ratio.gather(1, k) * w
    return torch.exp(ln_n), r50 / torch.exp(r[:, 0])
