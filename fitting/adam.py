"""Adam, as in GalMOSS: first-order steps on χ² with reverse-mode gradients.

An alternative to Levenberg–Marquardt for models whose Jacobian is too large to form.  Steps are
taken in the internal parameters (all O(1)-scaled) and projected onto the box bounds; the
learning rate decays by ``decay`` every step.  A galaxy stops when its χ² has improved by less
than ``tol_chi2`` over ``patience`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["AdamSettings", "adam"]


@dataclass(frozen=True)
class AdamSettings:
    max_iter: int = 1500
    lr: float = 0.02
    decay: float = 0.997
    tol_chi2: float = 1e-2
    patience: int = 30


def adam(problem, free: torch.Tensor, b: torch.Tensor, settings: AdamSettings = AdamSettings()):
    """Minimise χ² from ``free`` (B, F).  Returns (free, chi2, n_iter, converged)."""
    B, F = free.shape
    sub = problem.subset()
    theta = free.clone().to(torch.float32).requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=settings.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=settings.decay)
    best = torch.full((B,), float("inf"), dtype=torch.float64, device=free.device)
    best_theta = free.clone()
    last_improved = torch.zeros(B, dtype=torch.long, device=free.device)
    reference = best.clone()
    n_iter = torch.zeros(B, dtype=torch.long, device=free.device)
    active = torch.ones(B, dtype=torch.bool, device=free.device)
    for it in range(settings.max_iter):
        opt.zero_grad()
        r = problem.residuals(theta.to(torch.float64), b, sub)
        chi2 = (r.to(torch.float64) ** 2).sum(1)
        (chi2 * active).sum().backward()
        with torch.no_grad():
            better = chi2 < best
            best_theta[better] = theta.detach().to(torch.float64)[better]
            best = torch.where(better, chi2.detach(), best)
            big = better & (reference - chi2 > settings.tol_chi2)
            reference = torch.where(big, chi2.detach(), reference)
            last_improved = torch.where(big, torch.full_like(last_improved, it), last_improved)
            n_iter += active.long()
            active &= (it - last_improved) < settings.patience
            theta.grad[~active] = 0.0
        if not active.any():
            break
        opt.step()
        sched.step()
        with torch.no_grad():
            theta.data = torch.minimum(torch.maximum(theta.data, sub["lower"].float()), sub["upper"].float())
    return best_theta, best, n_iter, ~active
