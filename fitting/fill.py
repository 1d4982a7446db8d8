"""Fill values: the constant a cutout service writes where it has no data.

A stamp cut at the edge of a survey's footprint, across a chip gap or off the end of a scan
comes back with the missing part set to one constant (0 in most services, sometimes another
value; NaN is the honest choice and is masked anyway).  Taken as data, a zero-filled strip in a
sky-subtracted stamp looks like sky, and in a stamp with sky left in like a deep hole: on
simulated SDSS stamps with their left 35 of 96 columns zeroed, the fits' median |Δmag| went from
0.020 to 0.112 with χ²_ν 8-14, all with flags 0.  So the reader masks them.

A pixel is fill when it belongs to a patch of *identical* values: it equals one of its four
neighbours exactly, its value occurs on at least :data:`FILL_MIN_PIXELS` such pixels, and at
least :data:`FILL_MIN_ADJACENT` of all the pixels holding that value have an identical
neighbour.  Noisy data never do this: in float data two neighbours are never exactly equal, and
in integer data (raw counts) even the commonest value has an identical neighbour at only 86 %
of its pixels at 1 count rms (70 % at 1.5, 58 % at 2; measured on Gaussian noise).  A saturated
plateau (a star's core clipped at one value) is fill by this rule too, and masking it is right.
Not caught: a fill value with noise added.  Wrongly caught: integer data whose noise is below
~1 count (92 % at 0.8 counts rms), where whole regions share values; such data are rare (a
CCD's read noise alone is a few counts) and should come with a mask.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fill_pixels", "FILL_MIN_PIXELS", "FILL_MIN_ADJACENT"]

#: Fewest pixels with one value, each next to an identical one, that make a fill patch.
FILL_MIN_PIXELS = 32
#: Least fraction of a value's pixels that must sit next to an identical one.
FILL_MIN_ADJACENT = 0.9


def fill_pixels(image, min_pixels: int = FILL_MIN_PIXELS, min_adjacent: float = FILL_MIN_ADJACENT) -> np.ndarray:
    """(H, W) bool: the pixels of ``image`` that are fill (module docstring).

    image : (H, W) array, any numeric type; NaN and inf are never fill (they are masked as
        unusable anyway).
    min_pixels : >= 2.  min_adjacent : in (0, 1].
    """
    if int(min_pixels) < 2:
        raise ValueError(f"min_pixels must be >= 2, got {min_pixels}")
    if not 0.0 < min_adjacent <= 1.0:
        raise ValueError(f"min_adjacent must be in (0, 1], got {min_adjacent}")
    a = np.asarray(image)
    if a.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {a.shape}")
    finite = np.isfinite(a)
    same = np.zeros(a.shape, bool)
    across = (a[:, 1:] == a[:, :-1]) & finite[:, 1:]   # equal and finite: both finite
    same[:, 1:] |= across
    same[:, :-1] |= across
    down = (a[1:, :] == a[:-1, :]) & finite[1:, :]
    same[1:, :] |= down
    same[:-1, :] |= down
    out = np.zeros(a.shape, bool)
    if np.count_nonzero(same) < min_pixels:
        return out
    values, counts = np.unique(a[same], return_counts=True)
    for value, count in zip(values[counts >= min_pixels], counts[counts >= min_pixels]):
        holding = a == value
        if count >= min_adjacent * np.count_nonzero(holding):
            out |= holding & same
    return out
