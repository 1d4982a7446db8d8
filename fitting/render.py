"""The one renderer: batched model images with sub-pixel accuracy and PSF convolution by FFT.

How a model image is made (all galaxies of a batch at once; first axis = galaxy)
--------------------------------------------------------------------------------
The data are D(p) = ∫ G(x) E(p - x) dx, with G the galaxy and E the *effective* PSF (the PSF
convolved with the pixel, which is what a PSF measured from stars is).  Sampling G at pixel
centres is accurate only where G is smooth on the pixel scale, so G is split in three:

* outer: G·(1 - w) at pixel centres on a canvas that extends the cutout by the PSF's half-size
  on every side (light from outside the cutout is scattered in, so no flux is lost at the edges);
* patch: G·w on a K×K-pixel patch centred on each galaxy's *current* centre, sampled on an s×
  finer grid; its Fourier transform is taken directly at the canvas's frequencies by two small
  matrix products (a band-limited resampling: sub-pixel phases are kept, nothing wraps).
  w is a smooth window (1 in the middle of the patch, 0 at its edge): with a hard-edged split
  each part would ring (Gibbs) when band-limited, and the rings would not cancel;
* core: the light inside a tiny ellipse around the centre, where even the fine grid cannot
  follow a steep Sérsic cusp, integrated exactly in ln r and represented by a Gaussian with
  the same flux and second moments.

The three are added in Fourier space, multiplied by the PSF's transform (already shifted so its
centre pixel is the origin: no orientation flip, works for asymmetric PSFs), inverse
transformed, and cropped back to the cutout.  Because the galaxy is point-sampled and the PSF is
interpolated in Fourier space (sinc interpolation, exact for a band-limited PSF), the pixel is
not counted twice.  For a PSF that does *not* include the pixel (``psf_includes_pixel=False``)
the kernel is multiplied by the pixel's transfer function, which integrates the model over
pixels.  Without a PSF the model is integrated over pixels directly, no FFT at all: the patch's
pixels on the fine grid (the split then follows the patch's pixel edges, as nothing is
band-limited), the others by a 3 × 3 midpoint rule.

Accuracy against GalSim is pinned by tests/test_render_galsim.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .profiles.base import boxiness_area_ratio, log_radial_integral

__all__ = ["RenderConfig", "Canvas", "render", "next_fast_len", "psf_transfer", "psf_margin"]


@dataclass(frozen=True)
class RenderConfig:
    """Sub-pixel sampling settings.

    patch_size : pixels on a side of the finely sampled patch around each centre (>= 6).
    oversample : sub-pixels per pixel side inside the patch (>= 1).
    taper : pixels over which the patch window falls from 1 to 0 at the patch's edge; the flat
        middle has half-width patch_size / 2 - taper (>= 1).
    core_subpixels : the exactly integrated core reaches this many sub-pixels along its minor
        axis (the fine grid takes over beyond it).
    """

    patch_size: int = 10
    oversample: int = 8
    core_subpixels: float = 3.0
    taper: float = 3.0

    def __post_init__(self):
        if self.patch_size < 6:
            raise ValueError(f"patch_size must be >= 6, got {self.patch_size}")
        if not 1.0 <= self.taper <= self.patch_size / 2 - 1.0:
            raise ValueError(f"taper must lie in [1, patch_size/2 - 1] = [1, {self.patch_size / 2 - 1}], "
                             f"got {self.taper}")
        if self.oversample < 1:
            raise ValueError(f"oversample must be >= 1, got {self.oversample}")
        if self.core_subpixels <= 0:
            raise ValueError(f"core_subpixels must be > 0, got {self.core_subpixels}")


def next_fast_len(n: int) -> int:
    """Smallest m >= n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = max(int(n), 1)
    while True:
        k = m
        for f in (2, 3, 5):
            while k % f == 0:
                k //= f
        if k == 1:
            return m
        m += 1


class Canvas:
    """The pixel grid a batch is rendered on, and everything that depends only on it.

    height, width : the (padded) cutout size of the batch.
    margin : (my, mx) pixels added on each side for the PSF's reach (0 without a PSF).
    """

    def __init__(self, height: int, width: int, margin: tuple[int, int], config: RenderConfig,
                 device, dtype=torch.float32):
        self.height, self.width = int(height), int(width)
        self.margin = (int(margin[0]), int(margin[1]))
        self.config = config
        self.device, self.dtype = torch.device(device), dtype
        self.fourier = self.margin != (0, 0)
        if self.fourier:
            self.ny = next_fast_len(self.height + 2 * self.margin[0])
            self.nx = next_fast_len(self.width + 2 * self.margin[1])
        else:
            self.ny, self.nx = self.height, self.width
        self.patch = int(min(config.patch_size, self.ny, self.nx))
        s = config.oversample
        my, mx = self.margin
        kw = dict(device=self.device, dtype=dtype)
        # cutout-frame (0-based) coordinates of the canvas pixel centres
        self.ys = torch.arange(self.ny, **kw) - my
        self.xs = torch.arange(self.nx, **kw) - mx
        # offsets of the fine samples from the patch origin pixel's centre
        self.fine = (torch.arange(self.patch * s, **kw) + 0.5) / s - 0.5
        if self.fourier:
            ky = 2 * math.pi * torch.fft.fftfreq(self.ny, device=self.device, dtype=dtype)
            kx = 2 * math.pi * torch.fft.rfftfreq(self.nx, device=self.device, dtype=dtype)
            self.ky, self.kx = ky, kx
            cdt = torch.complex64 if dtype == torch.float32 else torch.complex128
            self.dft_y = torch.exp(-1j * ky[:, None].to(cdt) * self.fine[None, :].to(cdt))   # (Ny, Ks)
            self.dft_x = torch.exp(-1j * kx[None, :].to(cdt) * self.fine[:, None].to(cdt))   # (Ks, Nxr)
            # the same as one real matrix: [cos | -sin] (Ks, 2 Nxr), for real patches
            self.dft_x_real = torch.cat([self.dft_x.real, self.dft_x.imag], dim=1).contiguous()
            self.cdtype = cdt

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def crop(self, canvas: torch.Tensor) -> torch.Tensor:
        my, mx = self.margin
        return canvas[..., my:my + self.height, mx:mx + self.width]

    def shift(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """exp(-i k·(canvas position of (x, y))): the transform of a unit delta at (x, y)."""
        my, mx = self.margin
        py = torch.exp(-1j * (self.ky * (y[:, None] + my)).to(self.cdtype))
        px = torch.exp(-1j * (self.kx * (x[:, None] + mx)).to(self.cdtype))
        return py[:, :, None] * px[:, None, :]


def psf_margin(psf_shape: tuple[int, int], oversampling: int = 1) -> tuple[int, int]:
    """Canvas margin (image pixels each side) for a PSF image of ``psf_shape`` sampled
    ``oversampling`` times finer than the image: its half-size, plus one pixel."""
    return tuple(-(-int(s) // int(oversampling)) // 2 + 1 for s in psf_shape)


def psf_transfer(canvas: Canvas, psf: np.ndarray, oversampling: int = 1,
                 includes_pixel: bool = True) -> torch.Tensor:
    """The PSF's transform on the canvas's frequency grid, centre pixel (h//2, w//2) at the origin.

    ``psf`` is one (h, w) image or a stack (B, h, w) of images of one shape.  Computed by a
    direct DFT at the canvas frequencies, so an oversampled PSF (integer factor) is handled
    exactly and a PSF larger than the cutout needs no cropping.  Returns (B, Ny, Nx//2+1).
    """
    psf = torch.as_tensor(np.asarray(psf), dtype=torch.float64, device=canvas.device)
    if psf.ndim == 2:
        psf = psf[None]
    f = int(oversampling)
    h, w = psf.shape[-2:]
    ky = canvas.ky.to(torch.float64)
    kx = canvas.kx.to(torch.float64)
    oy = (torch.arange(h, dtype=torch.float64, device=canvas.device) - h // 2) / f
    ox = (torch.arange(w, dtype=torch.float64, device=canvas.device) - w // 2) / f
    fy = torch.exp(-1j * ky[:, None] * oy[None, :])              # (Ny, h)
    fx = torch.exp(-1j * ox[:, None] * kx[None, :])              # (w, Nxr)
    psf = psf / psf.sum(dim=(-2, -1), keepdim=True)
    kernel = fy @ psf.to(torch.complex128) @ fx
    if not includes_pixel:
        kernel = kernel * (torch.sinc(ky / (2 * math.pi))[:, None] * torch.sinc(kx / (2 * math.pi))[None, :])
    return kernel.to(canvas.cdtype)


def _ellipse_radius(dx, dy, p):
    """Elliptical radius (pixels along the major axis) of offsets (dx, dy) from the centre."""
    s, c = torch.sin(p["pa"]), torch.cos(p["pa"])
    u = -dx * s + dy * c           # along the major axis, which points to PA (CCW from +y)
    v = (dx * c + dy * s) / p["q"]  # along the minor axis, stretched to the major axis's scale
    c0 = p.get("c0")
    if c0 is None:
        return torch.sqrt(torch.clamp(u * u + v * v, min=1e-20))
    e = c0 + 2.0
    return torch.pow(torch.clamp(torch.abs(u) ** e + torch.abs(v) ** e, min=1e-30), 1.0 / e)


def _window(d, half_width, taper):
    """Patch window along one axis at offset d from the patch centre: C2 step from 1 to 0."""
    t = torch.clamp((torch.abs(d) - (half_width - taper)) / taper, 0.0, 1.0)
    return 1.0 - t * t * t * (10.0 + t * (6.0 * t - 15.0))


def _core_weight(r, r0):
    """1 inside r0/2, 0 outside r0, smooth (C1) in between: the part of G treated as the core."""
    t = torch.clamp((r - 0.5 * r0) / (0.5 * r0), 0.0, 1.0)
    return 1.0 - t * t * (3.0 - 2.0 * t)


def _core(component, p, log_amp, r0):
    """Flux and second-moment matrix (pixels²) of the core part of an elliptical component."""
    def log_f(r):
        return component.log_shape(r, p) + torch.log(torch.clamp(_core_weight(r, r0), min=1e-30))

    log_area = torch.log(p["q"]) - torch.log(boxiness_area_ratio(p.get("c0")))
    log_i0 = log_radial_integral(log_f, r0, n_nodes=64, span=30.0)
    log_i2 = log_radial_integral(lambda r: log_f(r) + 2 * torch.log(r), r0, n_nodes=64, span=30.0)
    flux = torch.exp(log_amp + log_area + log_i0)
    m2 = torch.exp(log_i2 - log_i0)  # <r²> in elliptical radius
    s, c = torch.sin(p["pa"]), torch.cos(p["pa"])
    suu, svv = 0.5 * m2, 0.5 * m2 * p["q"] ** 2
    sxx = suu * s * s + svv * c * c
    syy = suu * c * c + svv * s * s
    sxy = (-suu + svv) * s * c
    return flux, sxx, syy, sxy


@dataclass
class PatchGeometry:
    """Where one elliptical component's fine patch lies, for each galaxy of a batch.

    oy, ox : (B, 1, 1) integer 0-based cutout coordinates of the patch's first pixel.
    window : (B, Ny, Nx) the patch window at the canvas's pixel centres (1 inside, 0 outside).
    fy, fx : (B, Ks, 1), (B, 1, Ks) cutout coordinates of the fine samples.
    fine_window : (B, Ks, Ks) the window at the fine samples.
    r0 : (B, 1, 1) elliptical radius of the exactly integrated core.
    """

    oy: torch.Tensor
    ox: torch.Tensor
    window: torch.Tensor
    fy: torch.Tensor
    fx: torch.Tensor
    fine_window: torch.Tensor
    r0: torch.Tensor


def patch_geometry(canvas: Canvas, p: dict) -> PatchGeometry:
    """The patch, window and core radius of a component with natural parameters ``p`` (B, 1, 1).

    The patch and its window depend on the centre only through the patch's integer origin, so
    they are constant under small moves of the centre (the Jacobian relies on this).
    """
    cfg = canvas.config
    K = canvas.patch
    my, mx = canvas.margin
    oy = _patch_origin(p["y"], my, K, canvas.ny)
    ox = _patch_origin(p["x"], mx, K, canvas.nx)
    cy, cx = oy + (K - 1) / 2.0, ox + (K - 1) / 2.0
    half, taper = K / 2.0, cfg.taper
    Y, X = canvas.ys[None, :, None], canvas.xs[None, None, :]
    fy = oy + canvas.fine[None, :, None]
    fx = ox + canvas.fine[None, None, :]
    if canvas.fourier:
        window = _window(Y - cy, half, taper) * _window(X - cx, half, taper)
        fine_window = _window(fy - cy, half, taper) * _window(fx - cx, half, taper)
    else:
        # Without a PSF nothing is band-limited, so the split can follow the patch's pixel
        # edges: its pixels are integrated on the fine grid, the others by the 3 x 3 midpoint
        # rule of render().  A smooth window was point-sampled where it curves: up to 2.3 % of
        # the peak off in the taper (n = 1, r_e = 8 px, against GalSim).
        inside_y = (Y > oy - 0.5) & (Y < oy + K - 0.5)
        inside_x = (X > ox - 0.5) & (X < ox + K - 0.5)
        window = (inside_y & inside_x).to(canvas.dtype)
        fine_window = torch.ones_like(fy * fx)
    return PatchGeometry(oy, ox, window, fy, fx, fine_window, core_radius(canvas, p["q"]))


def core_radius(canvas: Canvas, q: torch.Tensor) -> torch.Tensor:
    """Elliptical radius of the exactly integrated core, for axis ratios ``q``.

    Its short side spans ``core_subpixels`` sub-pixels; its long side stays inside the patch
    window's flat middle, so the core lies wholly in the patch part.
    """
    cfg = canvas.config
    short = cfg.core_subpixels / cfg.oversample
    flat = canvas.patch / 2.0 - cfg.taper - 0.75
    return torch.minimum(short / torch.clamp(q, max=1.0), flat / torch.clamp(q, min=1.0))


def _patch_origin(center, margin, size, n):
    """Integer 0-based cutout coordinate of the patch's first pixel, kept on the canvas."""
    origin = torch.round(center.detach()) - size // 2
    return torch.clamp(origin, -margin, n - margin - size)


def render(canvas: Canvas, components, params: dict, zeropoint: torch.Tensor,
           kernel: torch.Tensor | None = None, centres: tuple | None = None) -> torch.Tensor:
    """Model images (B, H, W) for a batch.

    components : the model's components.
    params : {component name: {parameter name: tensor (B,)}} in natural units (x, y 0-based
        pixels, mag, lengths in pixels, q, pa in radians CCW from +y, ...).
    zeropoint : (B,) magnitude zero-points.
    kernel : (B, Ny, Nx//2+1) PSF transforms from :func:`psf_transfer`; required when the
        canvas has a margin (Fourier mode).
    centres : ((B,) y, (B,) x) reference pixel of each image for tilted skies (default: the
        canvas's centre).
    """
    K, s = canvas.patch, canvas.config.oversample
    h = 1.0 / s
    B = zeropoint.shape[0]
    zp = zeropoint[:, None, None]
    Y, X = canvas.ys[None, :, None], canvas.xs[None, None, :]
    outer = torch.zeros(B, canvas.ny, canvas.nx, device=canvas.device, dtype=canvas.dtype)
    spectrum = None

    def add_spectrum(term):
        nonlocal spectrum
        spectrum = term if spectrum is None else spectrum + term

    for comp in components:
        if not comp.convolved:
            continue
        p = {k: v[:, None, None] for k, v in params[comp.name].items()}
        x0, y0 = p["x"], p["y"]
        if comp.point_like:
            if not canvas.fourier:
                raise ValueError(f"component {comp.name!r} ({comp.kind}) needs a PSF")
            flux = torch.exp((zp - p["mag"]) * (0.4 * math.log(10.0)))[:, :, 0]
            add_spectrum(flux[:, :, None] * canvas.shift(params[comp.name]["y"], params[comp.name]["x"]))
            continue
        log_amp = comp.log_amplitude(p, zp)
        geo = patch_geometry(canvas, p)
        # outer: G (1 - w) at pixel centres on the whole canvas; without a PSF (nothing
        # band-limited, the pixel not in a kernel) integrated over each pixel by a 3 x 3
        # midpoint rule instead, 9x closer than the centre alone where G curves
        offsets = (0.0,) if canvas.fourier else (-1.0 / 3.0, 0.0, 1.0 / 3.0)
        g = 0.0
        for oy_ in offsets:
            for ox_ in offsets:
                r = _ellipse_radius(X + ox_ - x0, Y + oy_ - y0, p)
                g = g + torch.exp(log_amp + comp.log_shape(r, p))
        outer = outer + g / len(offsets) ** 2 * (1.0 - geo.window)
        # patch: G w at fine samples (flux per sub-pixel), the core left out
        fy, fx, oy, ox, r0 = geo.fy, geo.fx, geo.oy, geo.ox, geo.r0
        rf = _ellipse_radius(fx - x0, fy - y0, p)
        fine = (torch.exp(log_amp + comp.log_shape(rf, p)) * geo.fine_window
                * (1.0 - _core_weight(rf, r0)) * (h * h))
        cflux, sxx, syy, sxy = _core(comp, p, log_amp, r0)
        if canvas.fourier:
            add_spectrum(patch_spectrum(canvas, fine, oy[:, 0, 0], ox[:, 0, 0]))
            add_spectrum(core_spectrum(canvas, cflux, sxx, syy, sxy, params[comp.name]))
        else:
            # deposit the core as a normalised Gaussian on the fine grid, then bin to pixels
            dx, dy = fx - x0, fy - y0
            det = torch.clamp(sxx * syy - sxy * sxy, min=1e-12)
            chi2 = (syy * dx * dx - 2 * sxy * dx * dy + sxx * dy * dy) / det
            g = torch.exp(-0.5 * torch.clamp(chi2, max=80.0))
            g = g / torch.clamp(g.sum(dim=(-2, -1), keepdim=True), min=1e-30)
            fine = fine + cflux * g
            binned = fine.reshape(B, K, s, K, s).sum(dim=(2, 4))
            outer = outer + _scatter_patch(binned, oy[:, 0, 0], ox[:, 0, 0], canvas)
    if canvas.fourier:
        if kernel is None:
            raise ValueError("a canvas with a PSF margin needs the PSF kernel")
        total = torch.fft.rfft2(outer)
        if spectrum is not None:
            total = total + spectrum
        image = canvas.crop(torch.fft.irfft2(total * kernel, s=(canvas.ny, canvas.nx)))
    else:
        image = outer
    return image + sky_image(canvas, components, params, centres)


def patch_spectrum(canvas: Canvas, fine: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor) -> torch.Tensor:
    """Transform of fine patches (B, ..., Ks, Ks) at the canvas frequencies, placed at their origins.

    ``oy``, ``ox`` (B,): each galaxy's patch origin; any axes between the first and the last two
    (e.g. a stack of derivative patches) share it.  The real patch is transformed along x first
    with one real matrix product (cos and sin together), then along y: the cheapest order.
    """
    my, mx = canvas.margin
    nxr = canvas.dft_x.shape[1]
    half = fine @ canvas.dft_x_real                                   # (..., Ks, 2 Nxr)
    half = torch.complex(half[..., :nxr], half[..., nxr:])
    core = canvas.dft_y @ half                                        # (..., Ny, Nxr)
    extra = (1,) * (fine.ndim - 3)
    py = torch.exp(-1j * (canvas.ky[None, :] * (oy[:, None] + my)).to(canvas.cdtype))
    px = torch.exp(-1j * (canvas.kx[None, :] * (ox[:, None] + mx)).to(canvas.cdtype))
    return core * (py.view(-1, *extra, py.shape[1], 1) * px.view(-1, *extra, 1, px.shape[1]))


def core_spectrum(canvas: Canvas, flux, sxx, syy, sxy, p: dict) -> torch.Tensor:
    """Transform of the core's Gaussian (flux and second moments (B, 1, 1), pixels²) at the
    component's centre ``p["x"], p["y"]`` (B,)."""
    ky, kx = canvas.ky[None, :, None], canvas.kx[None, None, :]
    damp = torch.exp(-0.5 * (sxx * kx * kx + syy * ky * ky + 2 * sxy * kx * ky))
    return (flux * damp).to(canvas.cdtype) * canvas.shift(p["y"], p["x"])


def sky_offsets(canvas: Canvas, B: int, centres: tuple | None):
    """(yy (B, H, 1), xx (B, 1, W)): pixel offsets from each image's reference pixel."""
    my, mx = canvas.margin
    if centres is None:
        cy = torch.full((B,), (canvas.height - 1) / 2, device=canvas.device, dtype=canvas.dtype)
        cx = torch.full((B,), (canvas.width - 1) / 2, device=canvas.device, dtype=canvas.dtype)
    else:
        cy, cx = centres
    yy = canvas.ys[my:my + canvas.height][None, :, None] - cy[:, None, None]
    xx = canvas.xs[mx:mx + canvas.width][None, None, :] - cx[:, None, None]
    return yy, xx


def sky_image(canvas: Canvas, components, params: dict, centres: tuple | None):
    """The unconvolved components (the sky) summed: (B, H, W), or 0.0 if there are none."""
    total = 0.0
    for comp in components:
        if comp.convolved:
            continue
        p = params[comp.name]
        level = p["sky"][:, None, None]
        if "dsky_dx" in p:
            yy, xx = sky_offsets(canvas, level.shape[0], centres)
            level = level + p["dsky_dx"][:, None, None] * xx + p["dsky_dy"][:, None, None] * yy
        total = total + level
    return total


def _scatter_patch(binned: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, canvas: Canvas) -> torch.Tensor:
    """Add (B, K, K) pixel values into a zero canvas at integer origins (no-PSF mode)."""
    B, K = binned.shape[0], binned.shape[-1]
    rows = (oy.long()[:, None] + torch.arange(K, device=binned.device)[None, :])       # (B, K)
    cols = (ox.long()[:, None] + torch.arange(K, device=binned.device)[None, :])
    index = (rows[:, :, None] * canvas.nx + cols[:, None, :]).reshape(B, -1)
    flat = torch.zeros(B, canvas.ny * canvas.nx, device=binned.device, dtype=binned.dtype)
    flat = flat.scatter_add(1, index, binned.reshape(B, -1))
    return flat.reshape(B, canvas.ny, canvas.nx)
