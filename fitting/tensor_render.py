"""Tensor entry point to the one renderer: parameters as tensors in, model images out.

:func:`render_batch` is what a network's physics-informed loss calls: the parameters are tensors
(possibly carrying gradients), the PSFs are already on the device, and the result is the same
model image the fitter computes (:func:`galmoss_auto.fitting.render.render` on a
:class:`~galmoss_auto.fitting.render.Canvas` built exactly as
:class:`~galmoss_auto.fitting.problem.FitProblem` builds it).  Nothing is re-implemented here.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .profiles import BY_KIND
from .profiles.base import Component
from .render import Canvas, RenderConfig, psf_margin, psf_transfer, render

__all__ = ["render_batch", "psf_margin"]

#: the parameters render_batch needs for one elliptical component (natural units)
SERSIC_KEYS = ("x", "y", "mag", "r_e", "n", "q", "pa")


@lru_cache(maxsize=32)
def _canvas(H: int, W: int, margin: tuple, config: RenderConfig, device: str) -> Canvas:
    # Canvas construction builds DFT matrices; one per (size, PSF size, device) is enough.
    return Canvas(H, W, margin, config, device, dtype=torch.float32)


def _component(component) -> Component:
    if isinstance(component, Component):
        return component
    cls = BY_KIND.get(str(component))
    if cls is None:
        raise ValueError(f"unknown component {component!r}; choose one of {sorted(BY_KIND)}")
    return cls(str(component))


def _per_galaxy(value, B: int, name: str) -> list:
    """A scalar or a (B,) sequence/tensor as a list of B Python numbers."""
    if isinstance(value, torch.Tensor):
        if value.ndim == 0:
            return [value.item()] * B
        value = value.detach().cpu().reshape(-1).tolist()
    elif hasattr(value, "__len__"):
        value = [float(v) for v in value]
    else:
        return [value] * B
    if len(value) != B:
        raise ValueError(f"render_batch: {name} has {len(value)} values for {B} galaxies")
    return value


def render_batch(params: dict, zeropoint: torch.Tensor, psf: torch.Tensor | None,
                 shape: tuple[int, int], component="sersic", *, config: RenderConfig | None = None,
                 psf_includes_pixel=True, oversampling=1) -> torch.Tensor:
    """Model images (B, H, W), float32, differentiable in ``params``.

    params : {name: Tensor (B,)} in the renderer's natural units: x, y 0-based pixel
        coordinates (the centre of the first pixel is 0), mag, lengths (r_e) in pixels along
        the major axis, n, q = b/a (> 0), pa in radians counter-clockwise from +y.
    zeropoint : (B,) magnitude zero-points (mag = zp - 2.5 log10 flux).
    psf : (B, h, w) unit-sum PSF images (the effective PSF, pixel included), centre pixel
        (h // 2, w // 2); None renders without convolution (integrated over pixels).
    shape : (H, W) of the images.
    psf_includes_pixel : whether the PSF already contains the pixel response (True, the
        usual effective PSF) or the pixel must be convolved in (False); one bool, or one per
        galaxy (B,).
    oversampling : PSF pixels per image pixel, a positive integer; one, or one per galaxy (B,)
        (a batch of real cutouts may mix PSFs of several samplings).
    component : a profile kind (``"sersic"``, ``"expdisk"``, ``"devauc"``, ...) or a
        :class:`~galmoss_auto.fitting.profiles.base.Component`.

    Rendering runs in float32 with autocast disabled, so it is exact under mixed precision;
    inputs of any float dtype are cast.  Raises ValueError on a missing parameter, a shape
    mismatch or an oversampling that is not a positive integer.
    """
    comp = _component(component)
    names = [s.name for s in comp.param_specs]
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"render_batch: component {comp.kind!r} needs parameters {missing}")
    B = zeropoint.shape[0]
    for n in names:
        if params[n].shape != (B,):
            raise ValueError(f"render_batch: parameter {n!r} has shape {tuple(params[n].shape)}, "
                             f"expected ({B},)")
    H, W = (int(s) for s in shape)
    device = zeropoint.device
    config = config or RenderConfig()
    if psf is not None:
        if psf.ndim != 3 or psf.shape[0] != B:
            raise ValueError(f"render_batch: psf must be (B={B}, h, w), got {tuple(psf.shape)}")
        factors = _per_galaxy(oversampling, B, "oversampling")
        if not all(f >= 1 and f == int(f) for f in factors):
            raise ValueError(f"render_batch: oversampling must be positive integers (PSF pixels "
                             f"per image pixel), got {sorted(set(factors))}")
        pixel = _per_galaxy(psf_includes_pixel, B, "psf_includes_pixel")
        # the widest margin any galaxy's PSF needs (the finest sampling spans the most pixels)
        margin = psf_margin(tuple(psf.shape[-2:]), int(min(factors)))
    else:
        margin = (0, 0)
    canvas = _canvas(H, W, margin, config, str(device))
    with torch.autocast(device_type=device.type, enabled=False):
        kernel = None
        if psf is not None:
            # psf_transfer takes arrays; the PSF carries no gradient, so a host copy is exact.
            # It takes one sampling per call: one call per (oversampling, pixel) group.
            host = psf.detach().to("cpu", torch.float64).numpy()
            groups = {}
            for b, key in enumerate(zip(factors, pixel)):
                groups.setdefault(key, []).append(b)
            for (f, incl), rows in groups.items():
                part = psf_transfer(canvas, host[rows], int(f), bool(incl))
                if kernel is None:
                    kernel = part.new_empty((B,) + tuple(part.shape[1:]))
                kernel[rows] = part
        p = {comp.name: {n: params[n].to(torch.float32) for n in names}}
        return render(canvas, [comp], p, zeropoint.to(torch.float32), kernel=kernel)
