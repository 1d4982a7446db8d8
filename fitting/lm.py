"""Batched Levenberg–Marquardt with per-galaxy damping and an active set.

Each galaxy has its own damping λ (Marquardt's scaling by diag(JᵀWJ)), its own accept/reject
decision and its own convergence test; converged galaxies leave the working batch, so a batch
does not wait for its slowest member.  The normal matrix is formed per galaxy (B×P×P) in float64,
never the Npix×Npix weight matrix.  Parameters at a box bound that a step would push outwards
are held there for that step (the step is solved for the others); the rest is projected onto
the bounds.

Convergence: an accepted step that lowers χ² by less than ``tol_chi2`` (absolute) while λ is
small (near Gauss–Newton); a rejected near-Gauss–Newton step whose predicted gain is below
``tol_chi2`` (the minimum, where float32 rendering noise of ~1e-4 in χ² decides acceptance);
χ² lowered by less than ``tol_chi2`` over the last ``stall_window`` iterations (a stall: in the
curved, nearly degenerate valleys of multi-component models λ can cycle between accepted and
rejected steps that each gain ~1e-3, and the tests above never see a small λ); or λ driven
above ``lambda_max`` by rejected steps (no direction lowers χ² any more).  Δχ² = 1 is a 1σ
move of one parameter, so each test stops well inside the errors.

A galaxy none of whose trial steps was ever accepted has not been fitted: λ exhausted from the
starting point means the model could not be improved at all (a wrong Jacobian, a starting point
outside the profile's useful range, noise-dominated renders), not that the start is the minimum,
so it stops *not converged* (Flag.NOT_CONVERGED) at its starting values.  The one exception is
the gradient test above on the first, near-Gauss–Newton step: a predicted gain below
``tol_chi2`` there is a start that already is the minimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LMSettings", "levenberg_marquardt"]


@dataclass(frozen=True)
class LMSettings:
    # single-Sérsic fits stop after ~4 iterations; bulge+disk(+bar) fits with 14-21 free
    # parameters need 20-40 on average and up to ~100 (measured on simulated 2-3 component
    # galaxies), so the limit is set for them
    max_iter: int = 100
    lambda_init: float = 1e-3
    lambda_up: float = 10.0
    lambda_down: float = 10.0
    lambda_max: float = 1e7
    tol_chi2: float = 1e-2
    tol_chi2_rel: float = 1e-7
    stall_window: int = 5

    def __post_init__(self):
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.stall_window < 1:
            raise ValueError(f"stall_window must be >= 1 iteration, got {self.stall_window}")


def levenberg_marquardt(problem, free: torch.Tensor, b: torch.Tensor, settings: LMSettings = LMSettings(),
                        sub_weight: torch.Tensor | None = None):
    """Minimise χ² for every galaxy of ``problem``, starting from ``free`` (B, F).

    Returns (free, chi2, n_iter, converged, normal) with per-galaxy tensors; ``normal`` (B, F, F)
    is JᵀWJ at the last point where J was formed (the optimum, or one step of < tol_chi2 before
    it), which the covariance errors reuse instead of forming J again.  ``sub_weight`` (B, H, W),
    if given, replaces the problem's weights (bootstrap replicates).
    """
    dev = free.device
    B, F = free.shape
    free = free.clone()
    chi2 = torch.full((B,), float("inf"), dtype=torch.float64, device=dev)
    lam = torch.full((B,), settings.lambda_init, dtype=torch.float64, device=dev)
    n_iter = torch.zeros(B, dtype=torch.long, device=dev)
    converged = torch.zeros(B, dtype=torch.bool, device=dev)
    active = torch.ones(B, dtype=torch.bool, device=dev)
    need_j = torch.ones(B, dtype=torch.bool, device=dev)
    A = torch.zeros(B, F, F, dtype=torch.float64, device=dev)
    g = torch.zeros(B, F, dtype=torch.float64, device=dev)
    eye = torch.eye(F, dtype=torch.float64, device=dev)
    # χ² after each of the last stall_window iterations (ring buffer over the loop counter: all
    # active galaxies iterate together)
    W = settings.stall_window
    history = torch.full((W, B), float("inf"), dtype=torch.float64, device=dev)
    last_accept = torch.full((B,), -W, dtype=torch.long, device=dev)
    ever_accepted = torch.zeros(B, dtype=torch.bool, device=dev)

    def sub_of(idx):
        sub = problem.subset(idx)
        if sub_weight is not None:
            sub["weight"] = sub_weight[idx]
        return sub

    for it in range(settings.max_iter):
        idx = torch.nonzero(active).squeeze(1)
        if idx.numel() == 0:
            break
        jidx = idx[need_j[idx]]
        if jidx.numel():
            sub = sub_of(jidx)
            r, J = problem.jacobian(free[jidx], b[jidx], sub)
            J64, r64 = J.to(torch.float64), r.to(torch.float64)
            A[jidx] = J64.transpose(1, 2) @ J64
            g[jidx] = (J64.transpose(1, 2) @ r64[:, :, None])[:, :, 0]
            # χ² comes from the trial renders (one code path), except at the start: the analytic
            # Jacobian's render agrees with them only to float32 rounding, and comparing the two
            # near the minimum would reject good steps
            chi2[jidx] = torch.where(torch.isfinite(chi2[jidx]), chi2[jidx], (r64 * r64).sum(1))
        sub = sub_of(idx)
        diag = torch.diagonal(A[idx], dim1=1, dim2=2)
        damped = A[idx] + lam[idx, None, None] * torch.diag_embed(diag + 1e-12) + 1e-12 * eye
        gi = g[idx]
        step = _solve(damped, gi)
        # parameters at a bound that the step pushes outwards are held there and the step is
        # solved for the others: clipping the full step instead bends it off the descent
        # direction, gets it rejected and stalls the fit against the bound
        x = free[idx]
        held = (((x <= sub["lower"]) & (step < 0)) | ((x >= sub["upper"]) & (step > 0)))
        if held.any():
            keep = (~held).to(damped.dtype)
            damped = (damped * keep[:, :, None] * keep[:, None, :]
                      + torch.diag_embed(held.to(damped.dtype)))
            step = _solve(damped, gi * keep)
        trial = torch.minimum(torch.maximum(x + step, sub["lower"]), sub["upper"])
        r_try = problem.residuals(trial, b[idx], sub).to(torch.float64)
        chi2_try = (r_try * r_try).sum(1)
        gain = chi2[idx] - chi2_try
        # the decrease the local quadratic model predicts for this step: 2 δᵀJᵀr - δᵀ(JᵀJ)δ
        predicted = 2.0 * (step * gi).sum(1) - (step[:, None, :] @ A[idx] @ step[:, :, None])[:, 0, 0]
        lam_old = lam[idx].clone()
        accept = torch.isfinite(chi2_try) & (gain > 0)
        free[idx[accept]] = trial[accept]
        chi2[idx[accept]] = chi2_try[accept]
        lam[idx] = torch.where(accept, torch.clamp(lam[idx] / settings.lambda_down, min=1e-10),
                               lam[idx] * settings.lambda_up)
        need_j[idx] = accept
        n_iter[idx] += 1
        tol = settings.tol_chi2 + settings.tol_chi2_rel * chi2[idx]
        # converged: a near-Gauss-Newton step that gains (or would gain, by the quadratic model,
        # when float32 rendering noise hides it) less than tol; or no direction lowers χ² at all
        near_gn = lam_old <= 1e-2
        last_accept[idx[accept]] = it
        ever_accepted[idx[accept]] = True
        # a window of only rejected steps is λ searching for a descent direction, not a stall
        stalled = (history[it % W, idx] - chi2[idx] < tol) & (it - last_accept[idx] < W)
        history[it % W, idx] = chi2[idx]
        exhausted = ~accept & (lam[idx] > settings.lambda_max)
        done = ((accept & (gain < tol) & (lam[idx] <= 1e-2)) | (~accept & near_gn & (predicted < tol))
                | stalled | (exhausted & ever_accepted[idx]))
        # λ exhausted without a single accepted step: the fit never moved; stop, not converged
        gave_up = exhausted & ~ever_accepted[idx] & ~done
        converged[idx[done]] = True
        active[idx[done | gave_up]] = False
    return free, chi2, n_iter, converged, A


def _solve(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """matrix⁻¹ rhs per galaxy, non-finite entries (a singular matrix) set to 0."""
    step = torch.linalg.solve(matrix, rhs[:, :, None])[:, :, 0]
    return torch.nan_to_num(step, nan=0.0, posinf=0.0, neginf=0.0)
