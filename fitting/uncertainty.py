"""Parameter uncertainties: the covariance matrix (JᵀWJ)⁻¹ and the bootstrap.

Covariance: J is the Jacobian of the weighted model with respect to the free internal
parameters at the optimum, PSF convolution included; C = (JᵀWJ)⁻¹ per galaxy (B×F×F, float64).
It is mapped to catalog units with the Jacobian T of the catalog values with respect to the free
parameters (ties, log lengths, q flips and degrees included): C_cat = T C Tᵀ.  A neighbour's
parameter that ended on a box bound is held fixed here (left out of JᵀWJ): a neighbour that
faded to the faint bound has no Jacobian at all, and would otherwise make JᵀWJ singular and
take the target's errors with it; the catalog errors that depend on a held parameter are NaN.
One whose magnitude is on a bound has all its parameters held: faded to nothing, it constrains
none of them (its position errors came out near 1e15 px).

Bootstrap: each replicate re-weights each pixel by an independent Poisson(1) count (the Poisson
bootstrap, equivalent to resampling pixels with replacement for large images), drawn separately
for every galaxy and replicate from a generator seeded by (``seed``, a hash of the galaxy's id),
so a galaxy's replicates do not depend on its batch; replicates are fitted as extra members of
one batch, starting from the best fit, with the caller's full LM settings.  The error is the
standard deviation over replicates.
"""

from __future__ import annotations

import torch

__all__ = ["normal_matrix", "covariance", "catalog_jacobian", "propagate"]


def normal_matrix(problem, free: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """JᵀWJ (B, F, F), float64, at ``free``."""
    _, J = problem.jacobian(free, b, problem.subset())
    J = J.to(torch.float64)
    return J.transpose(1, 2) @ J


def covariance(A: torch.Tensor, held: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(C = A⁻¹ (B, F, F), ok (B,)); ok is False where A = JᵀWJ is not positive definite.

    ``held`` (B, F) bool: parameters held fixed; C is the inverse of A without their rows and
    columns, with zeros in theirs.
    """
    if held is not None:
        keep = ~held
        both = keep[:, :, None] & keep[:, None, :]
        A = torch.where(both, A, torch.zeros_like(A)) + torch.diag_embed(held.to(A.dtype))
    L, info = torch.linalg.cholesky_ex(A)
    ok = info == 0
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device).expand_as(A)
    C = torch.cholesky_solve(eye, torch.where(ok[:, None, None], L, eye))
    if held is not None:
        C = torch.where(both, C, torch.zeros_like(C))
    return C, ok


def catalog_jacobian(model, free: torch.Tensor, b: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """Column names and d(catalog values)/d(free) (B, Ncol, F), float64, by forward-mode AD."""
    names = [c for c, _, _ in model.catalog_columns]

    def values(f, bb):
        cat = model.catalog_values(model.expand(f[None], bb[None]))
        return torch.stack([cat[n][0] for n in names])

    T = torch.vmap(torch.func.jacfwd(values), in_dims=(0, 0))(free.to(torch.float64), b.to(torch.float64))
    return names, T


def propagate(C: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Standard errors sqrt(diag(T C Tᵀ)), (B, Ncol)."""
    cov = T @ C @ T.transpose(1, 2)
    return torch.sqrt(torch.clamp(torch.diagonal(cov, dim1=1, dim2=2), min=0.0))
