"""The network's output coordinates, and their maps to and from Sérsic parameters.

Eight well-conditioned coordinates (``COORDS``), each predicted with an uncertainty:

====== ================================================ ==========
dx, dy centre offset from the crop's centre pixel        pixels
dmag   mag - mag_ref (``mag_ref`` from the crop's flux)  mag
log_re log10 r_e (major axis)                            log10 px
log_n  log10 n                                           dex
q      b/a                                               --
c2, s2 cos 2θ, sin 2θ, θ = pa (radians CCW from +y)      --
====== ================================================ ==========

The network emits them standardised, ``z = (coord - shift) / SCALE``, plus ``ln sigma`` of each
coordinate in standardised units.  ``shift`` is either the constants :data:`SHIFT` (the first
checkpoints) or, in the *residual* form, a per-galaxy baseline measured from the crop itself
(moment centroid, PSF-corrected moment axis ratio and angle, and the Sérsic index, half-light
radius and missing aperture light of the circular profile with the crop's curve of growth; see
:func:`galmoss_auto.initnet.inputs.baseline_coords`), so that the network predicts corrections to
cheap measurements rather than values from scratch.  A checkpoint's registry entry records which
(``input.residual``) and the constants.

Physical ranges (:data:`VALID`): a raw prediction outside them is not used; the initializer
falls back to sep for that galaxy.  Inside them the values are brought to the catalog's
ranges (q to [0.05, 1], pa wrapped) by :func:`to_catalog`.
"""

from __future__ import annotations

import math

import torch

__all__ = ["COORDS", "SHIFT", "SCALE", "VALID", "targets_from_catalog", "natural_from_coords",
           "to_catalog", "valid_mask", "catalog_errors"]

COORDS = ("dx", "dy", "dmag", "log_re", "log_n", "q", "c2", "s2")
SHIFT = (0.0, 0.0, -0.2, 0.4, 0.1, 0.6, 0.0, 0.0)
SCALE = (1.0, 1.0, 0.3, 0.3, 0.3, 0.25, 0.7, 0.7)

#: accepted raw ranges (crop side C in pixels where it appears)
VALID = {"dx": "|dx| <= C/2 - 1", "dy": "|dy| <= C/2 - 1", "dmag": "[-4, 4] mag",
         "r_e": "[0.1, 2 C] px", "n": "[0.15, 10]", "q": "[0.02, 1.2]"}

_LN10 = math.log(10.0)


def _t(values, ref):
    return torch.tensor(values, dtype=ref.dtype, device=ref.device)


def standardise(coords: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """``(coords - shift) / SCALE``; ``shift`` (B, 8) a per-galaxy baseline (the residual
    form, :attr:`~galmoss_auto.initnet.inputs.NetInputs.baseline`) or None for :data:`SHIFT`."""
    shift = _t(SHIFT, coords) if shift is None else shift.to(coords.dtype)
    return (coords - shift) / _t(SCALE, coords)


def unstandardise(z: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """The inverse of :func:`standardise` (the same ``shift``)."""
    shift = _t(SHIFT, z) if shift is None else shift.to(z.dtype)
    return z * _t(SCALE, z) + shift


def targets_from_catalog(x, y, mag, r_e, n, q, pa_deg, origin: torch.Tensor, centre: int,
                         mag_ref: torch.Tensor) -> torch.Tensor:
    """Coordinates (B, 8) of true parameters in catalog conventions (x, y 1-based cutout pixels,
    mag, r_e px, n, q, pa degrees) for crops with ``origin`` (B, 2) (row, col) and centre index."""
    ox, oy = origin[:, 1].to(x.dtype), origin[:, 0].to(x.dtype)
    dx = (x - 1.0) - ox - centre
    dy = (y - 1.0) - oy - centre
    theta = torch.deg2rad(pa_deg)
    return torch.stack([dx, dy, mag - mag_ref.to(x.dtype), torch.log10(r_e), torch.log10(n), q,
                        torch.cos(2 * theta), torch.sin(2 * theta)], dim=1)


def natural_from_coords(coords: torch.Tensor, centre: int, mag_ref: torch.Tensor,
                        safe: bool = True) -> dict:
    """Renderer parameters (natural units, crop frame: x, y 0-based crop pixels) from coordinates
    (B, 8); the axis ratio rendered is ``1 - (1 - q) min(|(c2, s2)|, 1)`` (q itself when the
    angle vector has unit length, as the targets do).  ``safe`` clamps to values the renderer handles (for the loss only; the gradient
    of a clamped value is 0, and the parameter loss pulls it back)."""
    dx, dy, dmag, lre, lnn, q, c2, s2 = coords.unbind(1)
    if safe:
        lre, lnn, q = lre.clamp(-1.0, 2.0), lnn.clamp(-0.6, 0.9), q.clamp(0.05, 1.5)
    # The angle of (c2, s2) is undefined at its origin (atan2's gradient ~ 1/length); the
    # ellipticity is scaled by that length (up to 1), so the shape turns round there and the
    # image's dependence on the angle vanishes as fast as the angle's gradient grows.
    rho = torch.sqrt(c2 * c2 + s2 * s2 + 1e-12).clamp(max=1.0)
    return {"x": centre + dx, "y": centre + dy, "mag": mag_ref + dmag, "r_e": 10.0 ** lre,
            "n": 10.0 ** lnn, "q": 1.0 - (1.0 - q) * rho, "pa": 0.5 * torch.atan2(s2, c2)}


def valid_mask(coords: torch.Tensor, crop: int) -> torch.Tensor:
    """True where every raw prediction lies inside :data:`VALID` (and is finite)."""
    dx, dy, dmag, lre, lnn, q, c2, s2 = coords.unbind(1)
    lim = crop / 2.0 - 1.0
    ok = torch.isfinite(coords).all(1)
    ok &= (dx.abs() <= lim) & (dy.abs() <= lim) & (dmag.abs() <= 4.0)
    ok &= (lre >= math.log10(0.1)) & (lre <= math.log10(2.0 * crop))
    ok &= (lnn >= math.log10(0.15)) & (lnn <= 1.0)
    ok &= (q >= 0.02) & (q <= 1.2)
    return ok


def to_catalog(coords: torch.Tensor, origin: torch.Tensor, centre: int, mag_ref: torch.Tensor) -> dict:
    """Catalog-convention values {x, y (1-based cutout px), mag, r_e, n, q, pa (deg)}, (B,)
    tensors, from coordinates (B, 8); q clipped to [0.05, 1]."""
    dx, dy, dmag, lre, lnn, q, c2, s2 = coords.to(torch.float64).unbind(1)
    pa = torch.rad2deg(0.5 * torch.atan2(s2, c2))
    pa = 90.0 - torch.remainder(90.0 - pa, 180.0)
    return {"x": origin[:, 1].to(torch.float64) + centre + dx + 1.0,
            "y": origin[:, 0].to(torch.float64) + centre + dy + 1.0,
            "mag": mag_ref.to(torch.float64) + dmag, "r_e": 10.0 ** lre, "n": 10.0 ** lnn,
            "q": q.clamp(0.05, 1.0), "pa": pa}


def catalog_errors(coords: torch.Tensor, sigma: torch.Tensor) -> dict:
    """1-sigma errors in catalog units from coordinate uncertainties (B, 8): r_e and n
    propagated from log10, pa from the (c2, s2) scatter relative to their length."""
    c = coords.to(torch.float64)
    s = sigma.to(torch.float64)
    r_e, n = 10.0 ** c[:, 3], 10.0 ** c[:, 4]
    rho = torch.sqrt(c[:, 6] ** 2 + c[:, 7] ** 2).clamp(min=0.1)
    pa_err = torch.rad2deg(0.5 * 0.5 * (s[:, 6] + s[:, 7]) / rho).clamp(max=90.0)
    return {"x": s[:, 0], "y": s[:, 1], "mag": s[:, 2], "r_e": r_e * _LN10 * s[:, 3],
            "n": n * _LN10 * s[:, 4], "q": s[:, 5], "pa": pa_err}
