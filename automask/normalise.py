"""The learned masker's input: a cutout as signal-to-noise with an asinh stretch.

    z = asinh((image - background) / (SOFTENING * sigma))        (per pixel)

Dividing by the noise map removes the survey's units and depth (nanomaggies, ADU or
e-/s all give the same z); the asinh is linear for faint pixels (|S/N| << SOFTENING) and
logarithmic for bright cores, so a 10^4-sigma nucleus and a 2-sigma wing both land in a range a
network handles (z = 0.33 at S/N 1, 8.8 at S/N 10^4).  ``background`` is the sky left in the cutout: given (e.g. the
pipeline's measured sky) or estimated here as the sigma-clipped median of S/N over good pixels,
so a residual pedestal is taken out whatever the survey's sky subtraction did.  Masked pixels
(bad / user mask) are set to 0 (= sky), so they neither look like sources nor like holes.

Batched (first axis = cutout) and the same code on CPU and GPU; float32 out.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["SOFTENING", "CLIP", "normalise", "normalise_batch", "background_snr"]

#: S/N at which the stretch turns from linear to logarithmic (in units of sigma).
SOFTENING = 3.0
#: |z| is capped here (S/N ~ 10^7: as bright as the network needs to know).
CLIP = 16.0


def background_snr(snr: torch.Tensor, good: torch.Tensor, rounds: int = 2) -> torch.Tensor:
    """Sigma-clipped (3 x 1.4826 MAD) median of ``snr`` over ``good`` pixels, per cutout.

    snr, good : (B, H, W).  Returns (B,) in units of sigma; 0 where fewer than 10 good pixels.
    """
    flat = torch.where(good, snr, torch.full_like(snr, float("nan"))).flatten(1)
    med = torch.nanmedian(flat, dim=1).values
    for _ in range(rounds):
        mad = torch.nanmedian((flat - med[:, None]).abs(), dim=1).values * 1.4826
        keep = (flat - med[:, None]).abs() <= 3.0 * mad.clamp(min=1e-3)[:, None]
        med = torch.nanmedian(torch.where(keep, flat, torch.full_like(flat, float("nan"))), dim=1).values
    enough = good.flatten(1).sum(1) >= 10
    return torch.where(enough & torch.isfinite(med), med, torch.zeros_like(med))


def normalise_batch(image: torch.Tensor, sigma: torch.Tensor, bad: torch.Tensor | None = None,
                    background: torch.Tensor | None = None, softening: float = SOFTENING) -> torch.Tensor:
    """Stretched S/N images, (B, H, W) float32.

    image, sigma : (B, H, W) in any one linear unit (sigma > 0 where not bad).
    bad : (B, H, W) bool, True = excluded (set to 0 in the output); NaN/inf data or sigma <= 0
        are treated as bad too.
    background : (B,) sky left in the image, image units; None = estimated (see module doc).
    softening : S/N where the stretch turns logarithmic (> 0; default :data:`SOFTENING`).
    """
    if not softening > 0:
        raise ValueError(f"softening must be > 0 (S/N units), got {softening}")
    image = torch.as_tensor(image, dtype=torch.float32)
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=image.device)
    if image.ndim != 3 or sigma.shape != image.shape:
        raise ValueError(f"image and sigma must both be (B, H, W); got {tuple(image.shape)} and {tuple(sigma.shape)}")
    unusable = ~torch.isfinite(image) | ~torch.isfinite(sigma) | ~(sigma > 0)
    bad = unusable if bad is None else (torch.as_tensor(bad, device=image.device).bool() | unusable)
    snr = torch.where(bad, torch.zeros_like(image), image / torch.where(bad, torch.ones_like(sigma), sigma))
    if background is None:
        sky = background_snr(snr, ~bad)
    else:
        bg = torch.as_tensor(background, dtype=torch.float32, device=image.device).reshape(-1, 1, 1)
        # a given sky is in image units: subtract it before dividing (sigma varies per pixel)
        snr = torch.where(bad, snr, (image - bg) / torch.where(bad, torch.ones_like(sigma), sigma))
        sky = torch.zeros(image.shape[0], device=image.device)
    z = torch.asinh((snr - sky[:, None, None]) / softening)
    return torch.where(bad, torch.zeros_like(z), z.clamp(-CLIP, CLIP))


def normalise(image, sigma, bad=None, background: float | None = None) -> np.ndarray:
    """One cutout (H, W) -> stretched S/N (H, W) float32; see :func:`normalise_batch`."""
    img = torch.as_tensor(np.asarray(image, np.float32))[None]
    sig = torch.as_tensor(np.asarray(sigma, np.float32))[None]
    b = None if bad is None else torch.as_tensor(np.asarray(bad, bool))[None]
    bg = None if background is None else torch.tensor([float(background)])
    return normalise_batch(img, sig, b, bg)[0].numpy()
