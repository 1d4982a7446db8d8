"""A batch of cutouts turned into tensors, and the residuals and Jacobians the solvers need.

Cutouts of different sizes share one canvas: each is placed at the top-left corner of the
batch's largest size and the rest is masked (weight 0).  Weights are 1/sigma on good pixels and
0 on bad ones, so χ² = Σ (w (data - model))².  Rendering is float32; parameters, normal
matrices and solves are float64.
"""

from __future__ import annotations

import numpy as np
import torch

from .jacobian import render_with_jacobian, supports_analytic_jacobian
from .model import Model
from .render import Canvas, RenderConfig, psf_margin, psf_transfer, render

__all__ = ["FitProblem"]

#: finite-difference steps in internal units (pixels, magnitudes, log lengths, n, radians)
FD_STEP = 2e-3


class FitProblem:
    """Everything fixed during the fit of one batch, on one device."""

    def __init__(self, model: Model, cutouts, device="cpu", config: RenderConfig | None = None,
                 fd_step: float = FD_STEP, jacobian: str = "auto"):
        if jacobian not in ("auto", "analytic", "fd"):
            raise ValueError(f"jacobian must be 'auto', 'analytic' or 'fd', got {jacobian!r}")
        self.model, self.cutouts = model, list(cutouts)
        self.device = torch.device(device)
        self.config = config or RenderConfig()
        self.fd_step = fd_step
        B = len(self.cutouts)
        H = max(c.shape[0] for c in self.cutouts)
        W = max(c.shape[1] for c in self.cutouts)
        has_psf = [c.psf is not None for c in self.cutouts]
        if any(has_psf) and not all(has_psf):
            raise ValueError("a batch must be all with PSF or all without; fit() groups them")
        if model.has_point_source and not all(has_psf):
            raise ValueError("a model with a point source needs a PSF for every cutout")
        if all(has_psf):
            margins = [psf_margin(c.psf.shape, c.psf_oversampling) for c in self.cutouts]
            margin = (max(m[0] for m in margins), max(m[1] for m in margins))
        else:
            margin = (0, 0)
        self.canvas = Canvas(H, W, margin, self.config, self.device)
        data = np.zeros((B, H, W), np.float32)
        weight = np.zeros((B, H, W), np.float32)
        for i, c in enumerate(self.cutouts):
            h, w = c.shape
            data[i, :h, :w] = c.image
            sigma = np.ones((h, w)) if c.sigma is None else c.sigma
            weight[i, :h, :w] = np.where(c.mask, 0.0, 1.0 / sigma)
        self.data = torch.as_tensor(data, device=self.device)
        self.weight = torch.as_tensor(weight, device=self.device)
        self.n_good = (self.weight > 0).sum(dim=(1, 2)).to(torch.float64)
        self.zeropoint = torch.tensor([c.zeropoint for c in self.cutouts], dtype=torch.float32, device=self.device)
        self.centres = (torch.tensor([(c.shape[0] - 1) / 2 for c in self.cutouts], device=self.device),
                        torch.tensor([(c.shape[1] - 1) / 2 for c in self.cutouts], device=self.device))
        self.kernel = self._kernels() if all(has_psf) else None
        self.lower, self.upper = (t.to(self.device) for t in model.internal_bounds(self.cutouts))
        analytic = supports_analytic_jacobian(model.components, self.canvas)
        if jacobian == "analytic" and not analytic:
            raise ValueError("the analytic Jacobian needs a PSF and no boxy (c0) components")
        self.analytic = analytic and jacobian != "fd"
        # the internal parameters that move with the free ones, and d(those)/d(free)
        moving = self.model.A.abs().sum(1) > 0
        self.wrt_index = torch.nonzero(moving).squeeze(1)
        self.wrt = [(c.name, s.name, s.kind) for i, (c, s) in enumerate(self.model.params) if moving[i]]
        A = self.model.A[moving]
        eye = A.shape[0] == A.shape[1] and bool((A == torch.eye(A.shape[0], dtype=A.dtype)).all())
        self.free_from_wrt = None if eye else A.to(device=self.device, dtype=torch.float32)

    def _kernels(self) -> torch.Tensor:
        """PSF transforms, computed once per galaxy, grouped by PSF shape (no per-galaxy loop)."""
        out = torch.empty((len(self.cutouts), self.canvas.ny, self.canvas.nx // 2 + 1),
                          dtype=self.canvas.cdtype, device=self.device)
        groups: dict = {}
        for i, c in enumerate(self.cutouts):
            groups.setdefault((c.psf.shape, c.psf_oversampling, c.psf_includes_pixel), []).append(i)
        for (shape, over, incl), idx in groups.items():
            stack = np.stack([self.cutouts[i].psf for i in idx])
            out[idx] = psf_transfer(self.canvas, stack, over, incl)
        return out

    def subset(self, idx: torch.Tensor | None = None) -> dict:
        """Per-galaxy tensors of the galaxies ``idx`` (the solvers' working set); ``idx`` None:
        of every galaxy, the problem's own tensors, not copied (read them, don't write)."""
        if idx is None:
            return dict(data=self.data, weight=self.weight, zeropoint=self.zeropoint, kernel=self.kernel,
                        centres=self.centres, lower=self.lower, upper=self.upper)
        return dict(data=self.data[idx], weight=self.weight[idx], zeropoint=self.zeropoint[idx],
                    kernel=None if self.kernel is None else self.kernel[idx],
                    centres=(self.centres[0][idx], self.centres[1][idx]),
                    lower=self.lower[idx], upper=self.upper[idx])

    # -- model, residuals, Jacobian -----------------------------------------------------------
    def model_image(self, full: torch.Tensor, sub: dict, components=None) -> torch.Tensor:
        """Model images (B', H, W) for internal parameters ``full`` (B', P)."""
        params = {c: {k: v.to(torch.float32) for k, v in d.items()}
                  for c, d in self.model.natural(full).items()}
        return render(self.canvas, components or self.model.components, params, sub["zeropoint"],
                      kernel=sub["kernel"], centres=sub["centres"])

    def residuals(self, free: torch.Tensor, b: torch.Tensor, sub: dict) -> torch.Tensor:
        """Weighted residuals w (data - model), flattened: (B', Npix)."""
        full = self.model.expand(free, b)
        m = self.model_image(full, sub)
        return ((sub["data"] - m) * sub["weight"]).flatten(1)

    def jacobian(self, free: torch.Tensor, b: torch.Tensor, sub: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Residuals (B', Npix) and their Jacobian d(w·model)/d(free) (B', Npix, F).

        Analytic (rendered with the model, see :mod:`galmoss_auto.fitting.jacobian`) where the
        model allows it, else forward differences; the PSF convolution is inside J either way.
        """
        if self.analytic:
            return self._analytic_jacobian(free, b, sub)
        return self._fd_jacobian(free, b, sub)

    def _analytic_jacobian(self, free, b, sub):
        full = self.model.expand(free, b)
        params = {c: {k: v.to(torch.float32) for k, v in d.items()}
                  for c, d in self.model.natural(full).items()}
        image, cols = render_with_jacobian(self.canvas, self.model.components, params, sub["zeropoint"],
                                           sub["kernel"], self.wrt, centres=sub["centres"])
        w = sub["weight"].flatten(1)
        cols = cols.flatten(2)                                                       # (B', P', Npix)
        if self.free_from_wrt is not None:
            cols = torch.einsum("bpn,pf->bfn", cols, self.free_from_wrt)
        r = (sub["data"].flatten(1) - image.flatten(1)) * w
        return r, (cols * w[:, None]).transpose(1, 2)

    def _fd_jacobian(self, free, b, sub):
        """Forward differences, all perturbed copies rendered in one batched call."""
        Bp, F = free.shape
        steps = torch.eye(F, dtype=free.dtype, device=free.device) * self.fd_step
        # push a step at an upper bound downwards, so the perturbed point stays feasible
        at_upper = (free[:, None, :] + steps[None]) > sub["upper"][:, None, :]
        signed = torch.where(at_upper, -steps[None].expand(Bp, F, F), steps[None].expand(Bp, F, F))
        pert = torch.cat([free[:, None, :], free[:, None, :] + signed], dim=1)      # (B', 1+F, F)
        rep = {k: (v.repeat_interleave(F + 1, dim=0) if torch.is_tensor(v) else
                   tuple(t.repeat_interleave(F + 1, dim=0) for t in v) if isinstance(v, tuple) else v)
               for k, v in sub.items() if v is not None}
        rep.setdefault("kernel", None)
        full = self.model.expand(pert.reshape(-1, F), b.repeat_interleave(F + 1, dim=0))
        m = self.model_image(full, rep).reshape(Bp, F + 1, -1)
        w = sub["weight"].flatten(1)
        base = m[:, 0]
        h = signed.diagonal(dim1=1, dim2=2).to(m.dtype)                              # (B', F)
        J = (m[:, 1:] - base[:, None]) * w[:, None] / h[:, :, None]
        r = (sub["data"].flatten(1) - base) * w
        return r, J.transpose(1, 2)
