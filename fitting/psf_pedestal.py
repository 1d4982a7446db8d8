"""A PSF image's pedestal: a flat level left under it by its background subtraction.

An empirical PSF is built from stars after their background is subtracted; where that was
under- or over-subtracted, the whole image sits on a constant.  Normalised to unit sum, the
constant takes its share of the flux and spreads it evenly over the PSF's footprint, which is
no PSF at all: the model's core then carries only the rest of the flux, and the fitted galaxy
comes out brighter (positive pedestal) or fainter and swollen (negative) by that share.
Measured: Abdurro'uf et al.'s (2021) stacked SDSS PSFs (../shared/data) flatten to a constant
beyond ~10 arcsec that holds 9 % (g), 11 % (r), 20 % (i, z) and 27 % (u) of their sums;
pysersic's HSC PSF of gal2 lowered by 0.2 % of its peak (then -28 % of its sum over 43²) fitted
that galaxy 0.29 mag bright with r_e 2.5x too large, with flags 0.

The rule, on the outermost ring of pixels (width ``max(2, min(H, W) // 16)``): its median is a
pedestal when

- it differs from zero by more than :data:`PEDESTAL_MIN_SNR` times its own standard error
  (noise in a star-stacked PSF is not a pedestal);
- spread over the whole image it holds at least :data:`PEDESTAL_MIN_FRACTION` of the PSF's sum
  (less changes a magnitude by under ~0.01);
- it is below :data:`PEDESTAL_MAX_OF_PEAK` of the peak: a PSF with no core standing well above
  its border (a constant or a top-hat filling the image) is what its author meant, not a core on
  a pedestal;
- a positive level is flat: the ring's corners, the pixels farthest from the centre, are as
  high as the middles of its edges within :data:`PEDESTAL_FLAT` of the level plus 3 standard
  errors.  Real wings fall with radius: a profile falling as r^-1 or faster is lower at the
  corners by 29 % or more (r^-3, a Moffat's or a star's aureole: by 65 %); a truncated
  analytic PSF is not touched.  A negative level is never light, whatever its shape.

The pedestal is subtracted from every pixel and the PSF renormalised; the reader says so in the
catalog's ``message``.  A pedestal below these limits is left alone; wings that reach the
border of a small PSF image are left alone too (they fall towards its corners).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["psf_pedestal", "remove_psf_pedestal", "PEDESTAL_MIN_SNR", "PEDESTAL_MIN_FRACTION",
           "PEDESTAL_MAX_OF_PEAK", "PEDESTAL_FLAT"]

#: Least significance of the border level (in standard errors of its median).
PEDESTAL_MIN_SNR = 5.0
#: Least share of the PSF's sum that the level spread over the image must hold.
PEDESTAL_MIN_FRACTION = 0.01
#: Largest border level, as a fraction of the peak, that can be a pedestal under a core.
PEDESTAL_MAX_OF_PEAK = 0.1
#: Largest fall from the edges' middles to the corners, as a fraction of the level, that still
#: counts as flat (a wing falling as r^-1 falls by 29 %).
PEDESTAL_FLAT = 0.2
#: The smallest PSF image (px per side) on which the border is judged: a smaller one has no
#: border distinct from its core.
MIN_SIDE = 9


def _ring(psf: np.ndarray, w: int) -> np.ndarray:
    inner = np.ones(psf.shape, bool)
    inner[w:-w, w:-w] = False
    return psf[inner]


def psf_pedestal(psf) -> float:
    """The pedestal of a PSF image (module docstring), in the image's own units; 0.0 when it
    has none.  psf: 2-D, finite, with a positive sum (any normalisation)."""
    p = np.asarray(psf, dtype=np.float64)
    h, w_ = p.shape
    if min(h, w_) < MIN_SIDE:
        return 0.0
    w = max(2, min(h, w_) // 16)
    ring = _ring(p, w)
    level = float(np.median(ring))
    spread = 1.4826 * float(np.median(np.abs(ring - level)))
    error = 1.2533 * spread / math.sqrt(ring.size)     # standard error of a median
    total = float(p.sum())
    if abs(level) <= PEDESTAL_MIN_SNR * error:       # a level of exactly 0 stops here too
        return 0.0
    if not abs(level) * p.size >= PEDESTAL_MIN_FRACTION * total:
        return 0.0
    if not abs(level) <= PEDESTAL_MAX_OF_PEAK * float(p.max()):
        return 0.0
    if level < 0.0:
        return level
    lo_y, lo_x = h // 2 - w // 2, w_ // 2 - w // 2
    corners = np.concatenate([p[:w, :w].ravel(), p[:w, -w:].ravel(), p[-w:, :w].ravel(), p[-w:, -w:].ravel()])
    middles = np.concatenate([p[:w, lo_x:lo_x + w].ravel(), p[-w:, lo_x:lo_x + w].ravel(),
                              p[lo_y:lo_y + w, :w].ravel(), p[lo_y:lo_y + w, -w:].ravel()])
    fall = float(middles.mean() - corners.mean())   # wings fall towards the corners
    fall_error = spread * math.sqrt(2.0 / corners.size)
    if fall > PEDESTAL_FLAT * level + 3.0 * fall_error:
        return 0.0
    return level


def remove_psf_pedestal(psf, where: str = "psf") -> tuple[np.ndarray, str | None]:
    """(PSF with its pedestal subtracted, float64, same normalisation as given; a note saying
    what was subtracted, or None when nothing was).  ``where`` names the PSF in the note."""
    p = np.asarray(psf, dtype=np.float64)
    level = psf_pedestal(p)
    if level == 0.0:
        return p, None
    share = level * p.size / float(p.sum())
    note = (f"{where}: PSF's border is flat at {level / float(p.max()):.2g} of its peak "
            f"({100.0 * share:+.1f} % of its sum over {p.shape[0]}x{p.shape[1]} px), a background "
            "left under it: subtracted")
    return p - level, note
