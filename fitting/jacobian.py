"""Model images and their analytic Jacobian, rendered together (PSF mode).

The fitter needs d model / d θ for every free parameter at every step.  Forward differences
render the whole model once per parameter; here the derivatives come out of one render:

* centre (x, y): moving a component multiplies its spectrum by a phase ramp, so its derivative
  is -i k times the spectrum the render computes anyway (no re-rendering);
* magnitude: the component's spectrum times -0.4 ln 10;
* shape, size, q, pa: the profile's closed-form derivatives (``log_shape_jet``) and those of the
  elliptical radius, on the canvas and the fine patch; the core (a few numbers per galaxy) by
  automatic differentiation; each derivative image then goes through the same patch DFT and FFT
  as the image, as extra channels of one batched transform;
* sky: 1, and the pixel offsets for a tilted sky.

The columns are the exact derivatives of the rendered model (the patch and its window depend on
the centre only through the patch's integer origin, constant under small moves), so they agree
with finite differences to the latter's truncation error (tests/test_jacobian.py).  Used for
models of Sérsic-family, exponential, Gaussian, Moffat, King, Ferrers, point-source and sky
components with a PSF; boxy components (c0) and PSF-less fits use forward differences.
"""

from __future__ import annotations

import math

import torch

from .conventions import LOG_KINDS
from .render import (Canvas, _core, _core_weight, core_radius, core_spectrum, patch_geometry,
                     patch_spectrum, sky_image, sky_offsets)

__all__ = ["supports_analytic_jacobian", "render_with_jacobian"]

LN10_04 = 0.4 * math.log(10.0)


def supports_analytic_jacobian(components, canvas: Canvas) -> bool:
    """True where :func:`render_with_jacobian` covers the model on this canvas."""
    if not canvas.fourier:
        return False
    return all(not c.convolved or c.point_like or (c.elliptical and not getattr(c, "boxy", False))
               for c in components)


def _internal_tangent(kind: str, value: torch.Tensor) -> torch.Tensor:
    """d(natural value)/d(internal value): the value itself for log-fitted kinds, else 1."""
    return value if kind in LOG_KINDS else torch.ones_like(value)


def _scalar_jacobian(fn, p: dict, names: list[str], tangents: dict):
    """Values of ``fn(p)`` (a tuple of per-galaxy (B, 1, 1) tensors) and, for each, the dict
    {name: d value / d internal name} (B, 1, 1), by reverse-mode AD on these small tensors.

    Each output of galaxy i depends on galaxy i's parameters only, so the gradient of the sum
    over galaxies is every galaxy's own derivative.
    """
    with torch.enable_grad():
        leaves = {k: (v.detach().requires_grad_(True) if k in names else v) for k, v in p.items()}
        outs = fn(leaves)
        derivs = []
        for o in outs:
            if not names or not o.requires_grad:
                derivs.append({n: torch.zeros_like(o) for n in names})
                continue
            grads = torch.autograd.grad(o.sum(), [leaves[n] for n in names], retain_graph=True,
                                        allow_unused=True)
            derivs.append({n: torch.zeros_like(o) if gr is None else gr * tangents[n]
                           for n, gr in zip(names, grads)})
    return tuple(o.detach() for o in outs), derivs


def _elliptical(canvas: Canvas, comp, p: dict, zp: torch.Tensor, geometric: list[str], kinds: dict):
    """Spectrum (B, Ny, Nxr) of one elliptical component and the spectra of its derivatives with
    respect to the ``geometric`` parameters (shape parameters, q, pa): (B, G, Ny, Nxr)."""
    h = 1.0 / canvas.config.oversample
    Y, X = canvas.ys[None, :, None], canvas.xs[None, None, :]
    geo = patch_geometry(canvas, p)
    tangents = {n: _internal_tangent(kinds[n], p[n]) for n in geometric}

    def scalars(q):
        log_amp = comp.log_amplitude(q, zp)
        r0 = core_radius(canvas, q["q"])
        flux, sxx, syy, sxy = _core(comp, q, log_amp, r0)
        return log_amp, torch.log(r0), torch.log(torch.clamp(flux, min=1e-37)), sxx, syy, sxy

    (log_amp, _, log_flux, sxx, syy, sxy), d = _scalar_jacobian(scalars, p, geometric, tangents)
    d_log_amp, d_ln_r0, d_log_flux, d_sxx, d_syy, d_sxy = d
    r0 = geo.r0
    s, c = torch.sin(p["pa"]), torch.cos(p["pa"])
    pa_factor = 1.0 / (p["q"] * p["q"]) - 1.0

    def value_and_log_derivs(dx, dy):
        """exp(log_amp + log_shape), d ln r / d θ pieces and d ln I / d θ, at offsets dx, dy."""
        u = dy * c - dx * s                 # along the major axis
        w = dx * c + dy * s                 # along the minor axis (not yet stretched by 1/q)
        v = w / p["q"]
        r2 = torch.clamp(u * u + v * v, min=1e-20)
        r = torch.sqrt(r2)
        value, slope, dshape = comp.log_shape_jet(r, p)
        image = torch.exp(log_amp + value)
        dln_r, dln_i = {}, {}
        for n in geometric:
            if n == "q":
                dln_r[n] = -(v * v) / r2                    # d ln r / d ln q
            elif n == "pa":
                dln_r[n] = (u * w) * pa_factor / r2         # d ln r / d pa
            term = d_log_amp[n]
            if n in dshape:
                term = term + dshape[n]
            if n in dln_r:
                term = term + slope * dln_r[n]
            dln_i[n] = term
        return image, r, dln_r, dln_i

    # outer part on the canvas: O = I (1 - window)
    image, _, _, dln_i = value_and_log_derivs(X - p["x"], Y - p["y"])
    outer = image * (1.0 - geo.window)
    # stacks are filled in place (no torch.stack copies: these are the largest arrays here)
    outer_stack = outer.new_empty((outer.shape[0], 1 + len(geometric)) + outer.shape[1:])
    outer_stack[:, 0] = outer
    for i, n in enumerate(geometric):
        torch.mul(outer, dln_i[n], out=outer_stack[:, 1 + i])
    # fine patch: F = P (1 - cw), P = I window h²;  dF = F dln I - P dcw
    image_f, rf, dln_rf, dln_if = value_and_log_derivs(geo.fx - p["x"], geo.fy - p["y"])
    pw = image_f * geo.fine_window * (h * h)
    cw = _core_weight(rf, r0)
    fine = pw * (1.0 - cw)
    z = torch.clamp(2.0 * rf / r0 - 1.0, 0.0, 1.0)
    dcw_dln = (-6.0 * z * (1.0 - z)) * (z + 1.0)        # d cw / d(ln r - ln r0)
    fine_stack = fine.new_empty((fine.shape[0], 1 + len(geometric)) + fine.shape[1:])
    fine_stack[:, 0] = fine
    pw_dcw = pw * dcw_dln
    for i, n in enumerate(geometric):
        dln = dln_rf.get(n)
        dln = -d_ln_r0[n] if dln is None else dln - d_ln_r0[n]
        torch.sub(fine * dln_if[n], pw_dcw * dln, out=fine_stack[:, 1 + i])

    spec = torch.fft.rfft2(outer_stack) + patch_spectrum(canvas, fine_stack, geo.oy[:, 0, 0], geo.ox[:, 0, 0])
    flux = torch.exp(log_flux)
    core = core_spectrum(canvas, flux, sxx, syy, sxy, {"x": p["x"][:, 0, 0], "y": p["y"][:, 0, 0]})
    total = spec[:, 0] + core
    if not geometric:
        return total, spec[:, 1:]
    ky, kx = canvas.ky[None, :, None], canvas.kx[None, None, :]
    dspec = spec[:, 1:]
    kxx, kyy, kxy = kx * kx, ky * ky, 2.0 * kx * ky
    for i, n in enumerate(geometric):
        quad = d_sxx[n] * kxx + d_syy[n] * kyy + d_sxy[n] * kxy
        dspec[:, i] += core * (d_log_flux[n] - 0.5 * quad)
    return total, dspec


def render_with_jacobian(canvas: Canvas, components, params: dict, zeropoint: torch.Tensor,
                         kernel: torch.Tensor, wrt: list[tuple[str, str, str]],
                         centres: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Model images (B, H, W) and d image / d θ (B, len(wrt), H, W) for a batch.

    params : as for :func:`~galmoss_auto.fitting.render.render` (natural units, (B,) tensors).
    wrt : (component name, parameter name, parameter kind) for each column, in order; the
        derivative is with respect to the *internal* parameter (the log of a length or of q).
    The canvas must have a PSF margin and the components must pass
    :func:`supports_analytic_jacobian`.
    """
    if not supports_analytic_jacobian(components, canvas):
        raise ValueError("render_with_jacobian needs a PSF and no boxy components; "
                         "use forward differences for this model")
    B = zeropoint.shape[0]
    zp = zeropoint[:, None, None]
    H, W = canvas.height, canvas.width
    column = {(c, n): j for j, (c, n, _) in enumerate(wrt)}
    kinds = {(c, n): k for c, n, k in wrt}
    conv_cols, conv_specs = [], []
    total = None
    ky, kx = canvas.ky[None, :, None], canvas.kx[None, None, :]
    for comp in components:
        if not comp.convolved:
            continue
        p = {k: v[:, None, None] for k, v in params[comp.name].items()}
        wanted = [n for n in comp.param_names if (comp.name, n) in column]
        if comp.point_like:
            flux = torch.exp((zp - p["mag"]) * LN10_04)
            spec = flux.to(canvas.cdtype) * canvas.shift(params[comp.name]["y"], params[comp.name]["x"])
        else:
            geometric = [n for n in wanted if n not in ("x", "y", "mag")]
            spec, dspec = _elliptical(canvas, comp, p, zp, geometric,
                                      {n: kinds[(comp.name, n)] for n in geometric})
            for i, n in enumerate(geometric):
                conv_cols.append(column[(comp.name, n)])
                conv_specs.append(dspec[:, i])
        for n, factor in (("x", -1j * kx), ("y", -1j * ky), ("mag", -LN10_04)):
            if n in wanted:
                conv_cols.append(column[(comp.name, n)])
                conv_specs.append(spec * factor)
        total = spec if total is None else total + spec
    shape = (canvas.ny, canvas.nx)
    image = canvas.crop(torch.fft.irfft2(total * kernel, s=shape))
    cols = torch.zeros(B, len(wrt), H, W, device=canvas.device, dtype=canvas.dtype)
    if conv_specs:
        stack = torch.stack(conv_specs, dim=1)
        stack *= kernel[:, None]
        cols[:, conv_cols] = canvas.crop(torch.fft.irfft2(stack, s=shape))
    image = image + sky_image(canvas, components, params, centres)
    for comp in components:
        if comp.convolved or not any((comp.name, n) in column for n in comp.param_names):
            continue
        yy, xx = sky_offsets(canvas, B, centres)
        for n, value in (("sky", 1.0), ("dsky_dx", xx), ("dsky_dy", yy)):
            if (comp.name, n) in column:
                cols[:, column[(comp.name, n)]] = value
    return image, cols
