"""The physics-informed loss: heteroscedastic parameter likelihood + λ · χ² through the renderer.

``loss = w_param · (L_mean + NLL(targets | sg(mean), sigma)) + λ · mean_b ln χ²_ν,b``

* **Parameter loss** (per coordinate, standardised units, averaged over galaxies and
  coordinates), ``mean_loss="mse"`` (default): the means are trained by a squared error
  (Huber beyond 3 standardised units, so that a blended outlier cannot dominate a batch), the
  uncertainties by the NLL with the mean held fixed (``sg`` = stop-gradient): Gaussian
  ``0.5 ((t - μ) / σ)² + ln σ`` or Laplace ``|t - μ| / σ + ln σ``.  With ``mean_loss="nll"``
  the NLL trains both (the first checkpoints' loss).  That joint form lets the network give up
  on a coordinate it finds hard: the mean's gradient scales as 1/σ², so once σ grows the mean
  stops learning (measured: q and the angle no better than their prior, and the NLL spiking
  to ~500 on single batches; Seitzer et al. 2022, ICLR, "On the pitfalls of heteroscedastic
  uncertainty estimation") when those coordinates had to be learned from scratch.  Around the
  residual form's measured baselines that no longer happens, and the joint NLL's weighting
  (trusting the galaxies whose parameters the network can read) then wins, most in n: it is
  the training default (:data:`galmoss_auto.initnet.lightning.DEFAULTS`), while this class
  keeps ``"mse"`` as its own default.
* **χ²**: the predicted parameters are rendered by the fitter's own renderer
  (:func:`galmoss_auto.fitting.render_batch`, float32 with autocast off) on the crop, with its
  PSF at the PSF's own sampling (``oversampling``, ``psf_includes_pixel``), and compared with the data: ``χ²_ν = Σ_good ((data - model) / sigma)² / N_good``.  Its
  logarithm is used so that a bright galaxy (χ²_ν ~ 10^4 at a poor guess) and a faint one
  (~2) weigh alike and the term is O(1) like the NLL; at the truth ``ln χ²_ν ≈ 0``.  λ = 1 by
  default: both terms then move the network (the ablation in benchmarks/initnet_eval.py).

``w_param = 0`` gives the χ²-only ablation (uncertainties are then not trained), ``λ = 0``
the parameter-only one.  Everything is computed in float32.
"""

from __future__ import annotations

import torch

from galmoss_auto.fitting.tensor_render import render_batch

from .encoding import natural_from_coords, standardise, unstandardise

__all__ = ["MEAN_LOSSES", "nll", "huber_sq", "chi2_nu", "InitNetLoss"]

MEAN_LOSSES = ("mse", "nll")


def nll(mean: torch.Tensor, log_sigma: torch.Tensor, target: torch.Tensor,
        likelihood: str = "gaussian") -> torch.Tensor:
    """Per-galaxy, per-coordinate negative log-likelihood (B, K), standardised units."""
    r = (target - mean) * torch.exp(-log_sigma)
    if likelihood == "gaussian":
        return 0.5 * r * r + log_sigma
    if likelihood == "laplace":
        return r.abs() + log_sigma
    raise ValueError(f"likelihood must be 'gaussian' or 'laplace', got {likelihood!r}")


def huber_sq(r: torch.Tensor, delta: float = 3.0) -> torch.Tensor:
    """``0.5 r²`` for ``|r| <= delta``, linear beyond (same value and slope at ``delta``)."""
    a = r.abs()
    return torch.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def chi2_nu(coords: torch.Tensor, inputs) -> torch.Tensor:
    """Reduced χ² (B,) of the models implied by coordinates (B, 8) against the crops of
    :class:`~galmoss_auto.initnet.inputs.NetInputs` ``inputs``."""
    p = natural_from_coords(coords.float(), inputs.centre, inputs.mag_ref, safe=True)
    pixel = True if inputs.psf_includes_pixel is None else inputs.psf_includes_pixel
    factor = 1 if inputs.oversampling is None else inputs.oversampling
    model = render_batch(p, inputs.zeropoint, inputs.psf, tuple(inputs.image.shape[-2:]),
                         psf_includes_pixel=pixel, oversampling=factor)
    good = ~inputs.mask
    r = torch.where(good, (inputs.image - model) / inputs.sigma, torch.zeros_like(model))
    n = good.sum(dim=(1, 2)).clamp(min=1).float()
    return (r * r).sum(dim=(1, 2)) / n


class InitNetLoss:
    """``loss(mean, log_sigma, target, inputs) -> (total, {"nll": ., "chi2": .})``.

    mean, log_sigma : (B, 8) network outputs (standardised); target : (B, 8) true coordinates
    (unstandardised) or None (χ² only); inputs : the batch's NetInputs; shift : the
    standardisation's per-galaxy baseline (B, 8) in the residual form, None for the constants.
    param_weight >= 0, lam >= 0 (not both 0); mean_loss "mse" (default) or "nll" (see the module
    docstring).
    """

    def __init__(self, lam: float = 1.0, param_weight: float = 1.0, likelihood: str = "gaussian",
                 mean_loss: str = "mse"):
        if lam < 0 or param_weight < 0 or lam + param_weight == 0:
            raise ValueError(f"need lam >= 0, param_weight >= 0, not both 0; got {lam}, {param_weight}")
        if likelihood not in ("gaussian", "laplace"):
            raise ValueError(f"likelihood must be 'gaussian' or 'laplace', got {likelihood!r}")
        if mean_loss not in MEAN_LOSSES:
            raise ValueError(f"mean_loss must be one of {MEAN_LOSSES}, got {mean_loss!r}")
        self.lam, self.param_weight, self.likelihood = float(lam), float(param_weight), likelihood
        self.mean_loss = mean_loss

    def __call__(self, mean, log_sigma, target, inputs, shift=None):
        mean, log_sigma = mean.float(), log_sigma.float()
        zero = mean.new_zeros(())
        terms = {}
        total = zero
        if self.param_weight > 0:
            if target is None:
                raise ValueError("the parameter loss needs targets (param_weight > 0)")
            z = standardise(target.float(), shift)
            # a round galaxy has no angle: weight the (c2, s2) terms by the ellipticity
            w = torch.ones_like(z)
            e = ((1.0 - target[:, 5]) / (1.0 + target[:, 5])).clamp(0, 1).float()
            w[:, 6:] = (e / 0.1).clamp(max=1.0)[:, None]
            if self.mean_loss == "nll":
                per = nll(mean, log_sigma, z, self.likelihood)
            else:
                per = huber_sq(mean - z) + nll(mean.detach(), log_sigma, z, self.likelihood)
            term = (per * w).sum(1).mean() / w.sum(1).mean()
            terms["nll"] = term.detach()
            total = total + self.param_weight * term
        if self.lam > 0:
            c2 = chi2_nu(unstandardise(mean, shift), inputs)
            term = torch.log(c2.clamp(min=1e-3)).mean()
            terms["chi2"] = term.detach()
            total = total + self.lam * term
        return total, terms
