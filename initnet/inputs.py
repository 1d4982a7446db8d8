"""What the network sees: a fixed-size crop around the detected centre, stretched, plus scalars.

All steps are batched tensor operations (first axis = galaxy) and run on the device of the
inputs, in the main process:

1. **Centre**: the peak of the 5x5-box-smoothed S/N map (``image / sigma``, masked pixels 0)
   within ``search_radius`` (default 6) pixels of the cutout's geometric centre, where a
   survey cutout puts its target; an integer pixel, so cropping never interpolates.
2. **Crop**: ``crop`` x ``crop`` pixels (default 64, native resolution) with that pixel at index
   ``crop // 2``; outside the cutout the crop is masked.
3. **Reference flux** ``F_ref``: the unmasked flux inside a circle of ``aperture`` (default 16)
   pixels around the centre, at least 3 times its noise; the network predicts the magnitude
   *relative* to ``mag_ref = zp - 2.5 log10 F_ref``.
4. **Channels** (``in_channels`` = 3): ``asinh(S/N) / 3`` (faint outskirts and noise level),
   ``10 image / F_ref`` (the profile's shape, independent of brightness), the mask (1 = bad);
   masked pixels are 0 in the first two.
5. **Scalars** (10): ln PSF FWHM (image pixels; half-maximum area), PSF e1, e2 (Gaussian-weighted
   moments), log10 pixel scale (arcsec), log10 S/N of ``F_ref``, masked fraction of the
   aperture, and cheap measurements of the galaxy itself (:func:`light_measures`): ln r50
   (radius enclosing half of ``F_ref``, px), ln(r90 / r50), and the moment ellipticity
   e1, e2.  They give the network a well-conditioned first guess to correct rather than to
   rediscover.  A cutout without a PSF is treated as unresolved (FWHM 1 px, round).
6. **Profile scalars** (``profile=True``, :data:`N_PROFILE` = 10 more): the curve of growth in
   a scale-free form, ln(R_f / r50) for f = 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8 (the galaxy's,
   inside the aperture), ln(R50 / r50) and ln(R90 / r50) of the PSF, and the baseline's ln n.
   The Sérsic index lives in the profile's shape relative to the PSF's, which a small network
   reads off these numbers far more easily than off the pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["N_CHANNELS", "N_SCALARS", "N_PROFILE", "NetInputs", "psf_scalars", "growth_radii", "light_measures",
           "moment_ellipticity", "window_moments", "gaussian_moments", "baseline_coords", "prepare_inputs", "stack_cutouts", "cutout_arrays",
           "pad_arrays"]

N_CHANNELS = 3
N_SCALARS = 10
N_PROFILE = 10
PROFILE_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8)


@dataclass
class NetInputs:
    """A prepared batch.  Shapes: B = galaxies, C = crop side in pixels.

    x : (B, 3, C, C) network channels.  scalars : (B, N_SCALARS [+ N_PROFILE]).
    image, sigma : (B, C, C) the crop in image units.  mask : (B, C, C) bool, True = bad.
    psf : (B, h, w) unit-sum PSFs.  zeropoint, mag_ref, snr, r50 : (B,).
    origin : (B, 2) long, (row, col) 0-based cutout coordinates of the crop's first pixel.
    centre : int, crop index of the detected centre pixel (crop // 2).
    psf_fwhm : (B,) PSF FWHM in pixels.
    baseline : (B, 8) the residual form's shift (:func:`baseline_coords`).
    oversampling : (B,) PSF pixels per image pixel; psf_includes_pixel : (B,) bool (how the
    χ² loss renders with ``psf``; None: 1 and True).
    """

    x: torch.Tensor
    scalars: torch.Tensor
    image: torch.Tensor
    sigma: torch.Tensor
    mask: torch.Tensor
    psf: torch.Tensor
    zeropoint: torch.Tensor
    mag_ref: torch.Tensor
    snr: torch.Tensor
    origin: torch.Tensor
    centre: int
    psf_fwhm: torch.Tensor
    r50: torch.Tensor | None = None
    baseline: torch.Tensor | None = None
    oversampling: torch.Tensor | None = None
    psf_includes_pixel: torch.Tensor | None = None


def growth_radii(img: torch.Tensor, good: torch.Tensor, centre: int, total: torch.Tensor,
                 fracs=(0.5, 0.9), step: float = 0.5, rmax: float | None = None) -> list[torch.Tensor]:
    """Radii (px) about pixel (``centre``, ``centre``) of images (B, N, N) enclosing each
    fraction in ``fracs`` of ``total`` (B,): the cumulative good flux in ``step``-px annuli out
    to ``rmax`` px (default: the image's corner), linearly interpolated, at least 0.25 px."""
    B, N, _ = img.shape
    d = torch.arange(N, device=img.device, dtype=torch.float32) - centre
    r = torch.sqrt(d[:, None] ** 2 + d[None, :] ** 2)
    nb = int((float(r.max()) if rmax is None else rmax) / step) + 2
    idx = (r / step).long().clamp(max=nb - 1).flatten()
    f = torch.where(good, img, torch.zeros_like(img)).flatten(1)
    prof = torch.zeros(B, nb, device=img.device, dtype=img.dtype).index_add_(1, idx, f)
    cum = prof.cumsum(1) / total[:, None]
    edges = (torch.arange(nb, device=img.device, dtype=torch.float32) + 1) * step
    out = []
    for frac in fracs:
        k = (cum < frac).sum(1).clamp(max=nb - 1)
        c_hi = cum.gather(1, k[:, None])[:, 0]
        c_lo = torch.where(k > 0, cum.gather(1, (k - 1).clamp(min=0)[:, None])[:, 0], torch.zeros_like(c_hi))
        t = ((frac - c_lo) / (c_hi - c_lo).clamp(min=1e-6)).clamp(0, 1)
        out.append((edges[k] - step + t * step).clamp(min=0.25))
    return out


def light_measures(img: torch.Tensor, good: torch.Tensor, in_ap: torch.Tensor, f_ref: torch.Tensor,
                   centre: int, step: float = 0.5, extra_fracs=()):
    """(r50, r90, (Ixx, Iyy, Ixy), extra radii) of crops (B, C, C) about pixel ``centre``: radii
    (px) enclosing 50 % and 90 % of ``f_ref`` (cumulative flux in ``step``-px annuli inside the
    aperture, linearly interpolated), the central second moments (px²) of the positive flux
    inside max(3, 2 r50) px (:func:`moment_ellipticity` turns them into e1, e2; e1 > 0:
    elongated along x), and the radii of ``extra_fracs`` from the same curve of growth."""
    d = torch.arange(img.shape[-1], device=img.device, dtype=torch.float32) - centre
    r_ap = float(torch.sqrt(d[:, None] ** 2 + d[None, :] ** 2)[in_ap].max())
    r50, r90, *extra = growth_radii(img, good & in_ap[None], centre, f_ref, (0.5, 0.9, *extra_fracs),
                                    step, rmax=r_ap)
    _, _, ixx, iyy, ixy = window_moments(img, good, centre, torch.clamp(2.0 * r50, min=3.0))
    return r50, r90, (ixx, iyy, ixy), extra


def moment_ellipticity(ixx: torch.Tensor, iyy: torch.Tensor, ixy: torch.Tensor,
                       psf_var: torch.Tensor | float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(e1, e2) = ((Ixx - Iyy), 2 Ixy) / (Ixx + Iyy) of second moments (px²), with a PSF's
    per-axis variance ``psf_var`` removed from Ixx and Iyy first (exact for Gaussians; each
    kept at >= 1/4 of its observed value, as for the sep start, so that noise cannot make a
    galaxy narrower than nothing)."""
    ixx_i = torch.maximum(ixx - psf_var, 0.25 * ixx)
    iyy_i = torch.maximum(iyy - psf_var, 0.25 * iyy)
    t = (ixx_i + iyy_i).clamp(min=1e-6)
    return (ixx_i - iyy_i) / t, 2.0 * ixy / t


def window_moments(img: torch.Tensor, good: torch.Tensor, centre: int, radius: torch.Tensor):
    """(mx, my, ixx, iyy, ixy): first moments (px, relative to pixel ``centre``) and central
    second moments (px²) of the positive, unmasked flux of crops (B, C, C) within ``radius``
    (B,) px of that pixel."""
    C = img.shape[-1]
    d = torch.arange(C, device=img.device, dtype=torch.float32) - centre
    yy, xx = d[:, None], d[None, :]
    r = torch.sqrt(yy * yy + xx * xx)
    w = torch.where(good & (r[None] <= radius[:, None, None]), img.clamp(min=0), torch.zeros_like(img))
    ws = w.sum(dim=(1, 2)).clamp(min=1e-30)
    mx = (w * xx).sum(dim=(1, 2)) / ws
    my = (w * yy).sum(dim=(1, 2)) / ws
    ixx = (w * xx * xx).sum(dim=(1, 2)) / ws - mx * mx
    iyy = (w * yy * yy).sum(dim=(1, 2)) / ws - my * my
    ixy = (w * xx * yy).sum(dim=(1, 2)) / ws - mx * my
    return mx, my, ixx, iyy, ixy


def gaussian_moments(img: torch.Tensor, good: torch.Tensor, centre: int, sigma_w: torch.Tensor,
                     iters: int = 5, max_shift: float = 3.0):
    """(mx, my, Ixx, Iyy, Ixy) of crops (B, C, C) under a circular Gaussian weight of
    ``sigma_w`` (B,) px that follows the centroid: ``iters`` re-centrings from pixel ``centre``
    (offsets kept within ``max_shift`` px), then the weighted second moments of the positive
    unmasked flux about it with the weight divided out (``(M^-1 - 1/sigma_w²)^-1``, exact for a
    Gaussian galaxy; the weighted M where that is not positive definite).

    Measured on held-out SDSS-like crops (S/N 20-500) against the flat window of
    :func:`window_moments`: centroid scatter 0.06 px instead of 0.22, axis-ratio scatter (after
    the PSF's variance is removed) 0.10 instead of 0.125."""
    C = img.shape[-1]
    d = torch.arange(C, device=img.device, dtype=torch.float32) - centre
    f = torch.where(good, img, torch.zeros_like(img))
    s2 = (sigma_w * sigma_w)[:, None, None]
    mx = torch.zeros(img.shape[0], device=img.device)
    my = torch.zeros_like(mx)
    for _ in range(iters):
        X, Y = d[None, None, :] - mx[:, None, None], d[None, :, None] - my[:, None, None]
        w = f * torch.exp(-0.5 * (X * X + Y * Y) / s2)
        ws = w.sum(dim=(1, 2))
        ws = torch.where(ws.abs() > 1e-30, ws, torch.full_like(ws, 1e-30))
        mx = ((w * d[None, None, :]).sum(dim=(1, 2)) / ws).clamp(-max_shift, max_shift)
        my = ((w * d[None, :, None]).sum(dim=(1, 2)) / ws).clamp(-max_shift, max_shift)
    X, Y = d[None, None, :] - mx[:, None, None], d[None, :, None] - my[:, None, None]
    w = f.clamp(min=0) * torch.exp(-0.5 * (X * X + Y * Y) / s2)
    ws = w.sum(dim=(1, 2)).clamp(min=1e-30)
    ixx = (w * X * X).sum(dim=(1, 2)) / ws
    iyy = (w * Y * Y).sum(dim=(1, 2)) / ws
    ixy = (w * X * Y).sum(dim=(1, 2)) / ws
    # divide the weight out: inverse moments subtract 1/sigma_w^2 on the diagonal (2x2 closed form)
    det = (ixx * iyy - ixy * ixy).clamp(min=1e-12)
    a, b, c = iyy / det - 1.0 / s2[:, 0, 0], -ixy / det, ixx / det - 1.0 / s2[:, 0, 0]
    det_i = a * c - b * b
    ok = (a > 1e-6) & (c > 1e-6) & (det_i > 1e-12)
    det_i = torch.where(ok, det_i, torch.ones_like(det_i))
    ixx = torch.where(ok, c / det_i, ixx)
    iyy = torch.where(ok, a / det_i, iyy)
    ixy = torch.where(ok, -b / det_i, ixy)
    return mx, my, ixx, iyy, ixy


def baseline_coords(r50: torch.Tensor, r90: torch.Tensor, psf_r50: torch.Tensor, psf_r90: torch.Tensor,
                    g1: torch.Tensor, g2: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor,
                    aperture: float) -> torch.Tensor:
    """The residual form's per-galaxy baseline (B, 8) in :data:`~galmoss_auto.initnet.encoding.COORDS`
    order, from cheap measurements of the crop (radii in px):

    * centre: the centroid (dx, dy) (:func:`gaussian_moments`);
    * q, angle: the PSF-corrected moment ellipticity g = (g1, g2) (of the same moments):
      ``q0 = sqrt((1 - |g|) / (1 + |g|))``; the major axis at PA θ has ``g = -|g| (cos 2θ, sin 2θ)``;
    * log n, log r_e: the circular Sérsic profile whose radii enclosing 50 % and 90 % of the
      light inside the ``aperture`` are the measured ``r50``, ``r90`` with the PSF's radii
      (``psf_r50``, ``psf_r90``) removed in quadrature (each at least half its observed value),
      :func:`~galmoss_auto.initnet.growth.sersic_from_aperture_radii`; r_e turned into a major
      axis ``/ sqrt(q0)``;
    * dmag: ``2.5 log10 f``, f that profile's light fraction inside the aperture, which the
      reference magnitude misses.

    What quadrature, circular apertures and noise get wrong is left for the network."""
    from .growth import aperture_fraction, sersic_from_aperture_radii

    g = torch.sqrt(g1 * g1 + g2 * g2).clamp(max=0.95)
    q0 = torch.sqrt((1.0 - g) / (1.0 + g))
    unit = torch.sqrt(g1 * g1 + g2 * g2 + 1e-4)
    r50_i = torch.sqrt(torch.maximum(r50 * r50 - psf_r50 * psf_r50, 0.25 * r50 * r50))
    r90_i = torch.sqrt(torch.maximum(r90 * r90 - psf_r90 * psf_r90, 0.25 * r90 * r90))
    n0, r_circ = sersic_from_aperture_radii(r50_i, torch.maximum(r90_i, 1.05 * r50_i), aperture)
    log_re = torch.log10(r_circ.clamp(min=0.3) / torch.sqrt(q0)).clamp(-0.5, 1.8)
    frac = aperture_fraction(n0, aperture / r_circ.clamp(min=0.3)).clamp(min=0.25)
    dmag = 2.5 * torch.log10(frac)
    return torch.stack([dx, dy, dmag, log_re, torch.log10(n0), q0, -g1 / unit, -g2 / unit], dim=1)


def psf_scalars(psf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(FWHM px, e1, e2) of PSF images (B, h, w).  FWHM from the area above half maximum
    (``2 sqrt(A / pi)``, with the fractional crossing pixel counted by linear weight), e1, e2
    from moments weighted by a Gaussian of that FWHM around the centre pixel."""
    p = psf.clamp(min=0)
    p = p / p.sum(dim=(-2, -1), keepdim=True).clamp(min=1e-30)
    peak = p.amax(dim=(-2, -1), keepdim=True)
    # soft count: pixels well above half max count 1, those near it partly (smooth in FWHM)
    frac = ((p / peak - 0.5) / 0.25 + 0.5).clamp(0, 1)
    area = frac.sum(dim=(-2, -1))
    fwhm = 2.0 * torch.sqrt(area / math.pi)
    h, w = p.shape[-2:]
    yy = (torch.arange(h, device=p.device, dtype=p.dtype) - h // 2)[:, None]
    xx = (torch.arange(w, device=p.device, dtype=p.dtype) - w // 2)[None, :]
    s2 = (fwhm / 2.3548).clamp(min=0.5)[:, None, None] ** 2
    wgt = p * torch.exp(-0.5 * (xx * xx + yy * yy) / s2)
    wsum = wgt.sum(dim=(-2, -1)).clamp(min=1e-30)
    ixx = (wgt * xx * xx).sum(dim=(-2, -1)) / wsum
    iyy = (wgt * yy * yy).sum(dim=(-2, -1)) / wsum
    ixy = (wgt * xx * yy).sum(dim=(-2, -1)) / wsum
    t = (ixx + iyy).clamp(min=1e-12)
    return fwhm, (ixx - iyy) / t, 2.0 * ixy / t


def cutout_arrays(cutout) -> dict:
    """One cutout as the initializer reads it, at inference and in fine-tuning alike: image
    with the measured sky (``cutout.meta["sky"].level``, when present) removed, sigma (1 where
    none), mask, PSF (a ~1 px kernel where none), ``oversampling`` (PSF pixels per image pixel)
    and ``psf_includes_pixel``; numpy arrays and Python scalars."""
    # starting values describe the galaxy alone: remove the measured sky, when there is one
    sky = getattr(cutout, "meta", {}).get("sky")
    has_psf = cutout.psf is not None
    level = float(getattr(sky, "level", 0.0) or 0.0)
    return {"image": (np.asarray(cutout.image, np.float64) - level).astype(np.float32),
            "sigma": (np.ones(cutout.shape, np.float32) if cutout.sigma is None
                      else np.asarray(cutout.sigma, np.float32)),
            "mask": np.asarray(cutout.mask, bool),
            "psf": np.asarray(cutout.psf, np.float32) if has_psf else _delta_psf(),
            "oversampling": float(cutout.psf_oversampling) if has_psf else 1.0,
            "psf_includes_pixel": bool(cutout.psf_includes_pixel) if has_psf else True}


def pad_arrays(arrays) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Dicts with ``image``, ``sigma``, ``mask`` (h, w) and ``psf`` arrays (numpy or CPU
    tensors) -> image, sigma, mask (B, H, W) padded to the largest size (padding: 0, 1, masked)
    and psf (B, h, w) zero-padded symmetrically to the largest odd size (each PSF's centre
    pixel stays the centre); float32 and bool."""
    B = len(arrays)
    H = max(a["image"].shape[0] for a in arrays)
    W = max(a["image"].shape[1] for a in arrays)
    ph = max(a["psf"].shape[0] // 2 for a in arrays) * 2 + 1
    pw = max(a["psf"].shape[1] // 2 for a in arrays) * 2 + 1
    image = np.zeros((B, H, W), np.float32)
    sigma = np.ones((B, H, W), np.float32)
    mask = np.ones((B, H, W), bool)
    psf = np.zeros((B, ph, pw), np.float32)
    for i, a in enumerate(arrays):
        h, w = a["image"].shape
        image[i, :h, :w], sigma[i, :h, :w], mask[i, :h, :w] = a["image"], a["sigma"], a["mask"]
        p = a["psf"]
        oy, ox = ph // 2 - p.shape[0] // 2, pw // 2 - p.shape[1] // 2
        psf[i, oy:oy + p.shape[0], ox:ox + p.shape[1]] = p
    return image, sigma, mask, psf


def stack_cutouts(cutouts, device) -> dict:
    """Stack cutouts of any sizes (each read by :func:`cutout_arrays`) into padded tensors on
    ``device``.

    Images are padded (masked) to the largest size, PSFs zero-padded symmetrically to the
    largest odd size (their centre pixel stays the centre).  Returns a dict with image, sigma,
    mask (B, H, W), psf (B, h, w), zeropoint, pixel_scale, oversampling (PSF pixels per image
    pixel, 1 without a PSF), psf_includes_pixel (bool) (B,), shapes (list of (h, w)).
    """
    arrays = [cutout_arrays(c) for c in cutouts]
    image, sigma, mask, psf = pad_arrays(arrays)
    pix = [c.pixel_scale if c.pixel_scale else float("nan") for c in cutouts]
    t = lambda a, dt=torch.float32: torch.as_tensor(a, dtype=dt, device=device)
    return {"image": t(image), "sigma": t(sigma), "mask": t(mask, torch.bool), "psf": t(psf),
            "zeropoint": t([c.zeropoint for c in cutouts]), "pixel_scale": t(pix),
            "oversampling": t([a["oversampling"] for a in arrays]),
            "psf_includes_pixel": t([a["psf_includes_pixel"] for a in arrays], torch.bool),
            "shapes": [tuple(c.shape) for c in cutouts]}


def _centred_square(psf: torch.Tensor) -> torch.Tensor:
    """PSFs (B, h, w) zero-padded to an odd square whose centre pixel is theirs (h // 2, w // 2)."""
    h, w = psf.shape[-2:]
    half = max(h // 2, w // 2, (h - 1) - h // 2, (w - 1) - w // 2)
    return F.pad(psf, (half - w // 2, half - (w - 1 - w // 2), half - h // 2, half - (h - 1 - h // 2)))


def _delta_psf() -> np.ndarray:
    # an unresolved PSF for cutouts without one: a 3x3 kernel of FWHM ~1 px
    k = np.array([[0.0625, 0.125, 0.0625], [0.125, 0.25, 0.125], [0.0625, 0.125, 0.0625]], np.float32)
    return k


def prepare_inputs(image: torch.Tensor, sigma: torch.Tensor, mask: torch.Tensor, psf: torch.Tensor,
                   zeropoint: torch.Tensor, pixel_scale: torch.Tensor, crop: int = 64,
                   aperture: float = 16.0, search_radius: float = 6.0,
                   shapes: list | None = None, profile: bool = False,
                   oversampling: torch.Tensor | None = None,
                   psf_includes_pixel: torch.Tensor | None = None) -> NetInputs:
    """Batch of cutouts (B, H, W) -> :class:`NetInputs` (see the module docstring; ``profile``:
    append the profile scalars, item 6).

    ``shapes``: each cutout's true (h, w) when the batch is padded (the geometric centre is
    taken from it); default (H, W) for all.  ``pixel_scale`` NaN (unknown) is read as 0.262".
    ``oversampling`` (B,): PSF pixels per image pixel (default 1): the PSF's widths are
    measured in its own pixels and given to the network in image pixels.
    ``psf_includes_pixel`` (B,) bool (default True): kept, with ``oversampling``, for the χ²
    loss's rendering.
    """
    if crop < 16 or crop % 2:
        raise ValueError(f"crop must be an even number of pixels >= 16, got {crop}")
    B, H, W = image.shape
    dev = image.device
    image, sigma = image.to(torch.float32), sigma.to(torch.float32)
    mask = mask.to(torch.bool) | ~torch.isfinite(image) | ~(sigma > 0)
    sigma = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
    image = torch.where(torch.isfinite(image), image, torch.zeros_like(image))
    snr = torch.where(mask, torch.zeros_like(image), image / sigma)
    if shapes is None:
        cy = torch.full((B,), (H - 1) / 2.0, device=dev)
        cx = torch.full((B,), (W - 1) / 2.0, device=dev)
    else:
        cy = torch.tensor([(s[0] - 1) / 2.0 for s in shapes], device=dev)
        cx = torch.tensor([(s[1] - 1) / 2.0 for s in shapes], device=dev)
    smooth = F.avg_pool2d(snr[:, None], 5, stride=1, padding=2)[:, 0]
    yy = torch.arange(H, device=dev, dtype=torch.float32)[None, :, None]
    xx = torch.arange(W, device=dev, dtype=torch.float32)[None, None, :]
    near = (yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2 <= search_radius ** 2
    score = torch.where(near, smooth, torch.full_like(smooth, -1e30)).flatten(1)
    best = score.argmax(dim=1)
    py, px = best // W, best % W
    half = crop // 2
    oy, ox = py - half, px - half
    # crop with padding: pad by `crop` on every side, masked
    pad = crop
    img_p = F.pad(image, (pad, pad, pad, pad))
    sig_p = F.pad(sigma, (pad, pad, pad, pad), value=1.0)
    msk_p = F.pad(mask, (pad, pad, pad, pad), value=True)
    rows = (oy + pad)[:, None] + torch.arange(crop, device=dev)[None, :]
    cols = (ox + pad)[:, None] + torch.arange(crop, device=dev)[None, :]
    bidx = torch.arange(B, device=dev)[:, None, None]
    ri, ci = rows[:, :, None], cols[:, None, :]
    c_img, c_sig, c_msk = img_p[bidx, ri, ci], sig_p[bidx, ri, ci], msk_p[bidx, ri, ci]

    good = ~c_msk
    r2 = ((torch.arange(crop, device=dev) - half) ** 2)
    in_ap = (r2[:, None] + r2[None, :]) <= aperture ** 2
    ap = good & in_ap[None]
    flux = torch.where(ap, c_img, torch.zeros_like(c_img)).sum(dim=(1, 2))
    noise = torch.sqrt(torch.where(ap, c_sig ** 2, torch.zeros_like(c_sig)).sum(dim=(1, 2))).clamp(min=1e-30)
    f_ref = torch.maximum(flux, 3.0 * noise)
    mag_ref = zeropoint.to(torch.float32) - 2.5 * torch.log10(f_ref)
    snr_ref = flux.clamp(min=0) / noise
    masked_frac = 1.0 - ap.sum(dim=(1, 2)).float() / in_ap.sum().float()

    s = torch.where(good, c_img / c_sig, torch.zeros_like(c_img))
    lin = torch.where(good, 10.0 * c_img / f_ref[:, None, None], torch.zeros_like(c_img))
    x = torch.stack([torch.asinh(s) / 3.0, lin.clamp(-10, 10), c_msk.float()], dim=1)

    psf = psf.to(torch.float32)
    psf = psf / psf.sum(dim=(-2, -1), keepdim=True).clamp(min=1e-30)
    fwhm, e1, e2 = psf_scalars(psf)
    scale = torch.ones_like(fwhm) if oversampling is None else oversampling.to(fwhm)
    fwhm = fwhm / scale      # image pixels (e1, e2 are ratios: the PSF's sampling drops out)
    pix = torch.where(torch.isfinite(pixel_scale), pixel_scale.to(torch.float32),
                      torch.full_like(pixel_scale, 0.262, dtype=torch.float32))
    r50, r90, moments, radii = light_measures(c_img, good, in_ap, f_ref, half,
                                              extra_fracs=PROFILE_FRACTIONS if profile else ())
    g1, g2 = moment_ellipticity(*moments)
    # the baseline's centre and shape: Gaussian-weighted moments that follow the galaxy
    mx, my, *adaptive = gaussian_moments(c_img, good, half, torch.clamp(r50, min=1.5))
    gc1, gc2 = moment_ellipticity(*adaptive, psf_var=(fwhm / 2.3548) ** 2)
    sq = _centred_square(psf)
    psf_r50, psf_r90 = growth_radii(sq, torch.ones_like(sq, dtype=torch.bool), sq.shape[-1] // 2,
                                    torch.ones_like(fwhm))
    psf_r50, psf_r90 = psf_r50 / scale, psf_r90 / scale
    baseline = baseline_coords(r50, r90, psf_r50, psf_r90, gc1, gc2, mx, my, aperture)
    scalars = torch.stack([torch.log(fwhm.clamp(min=0.3)), e1, e2, torch.log10(pix),
                           torch.log10(snr_ref.clamp(min=1.0)), masked_frac,
                           torch.log(r50), torch.log(r90 / r50).clamp(0, 3), g1, g2], dim=1)
    if profile:
        shape = [torch.log(r / r50) for r in radii] + [torch.log(psf_r50 / r50), torch.log(psf_r90 / r50)]
        scalars = torch.cat([scalars, torch.stack(shape, dim=1).clamp(-4, 4),
                             baseline[:, 4:5] * math.log(10.0)], dim=1)
    return NetInputs(x=x, scalars=scalars, image=c_img, sigma=c_sig, mask=c_msk, psf=psf,
                     zeropoint=zeropoint.to(torch.float32), mag_ref=mag_ref, snr=snr_ref,
                     origin=torch.stack([oy, ox], dim=1), centre=half, psf_fwhm=fwhm, r50=r50,
                     baseline=baseline, oversampling=scale, psf_includes_pixel=psf_includes_pixel)
