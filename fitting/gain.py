"""The effective gain of a cutout measured from its own pixels, for a sigma map with Poisson noise.

A sigma map estimated from the sky RMS alone (no gain in the row, header, options or survey)
under-weights nothing at the sky but over-weights a bright galaxy's core, whose photon noise it
leaves out: on ProFit's KiDS stamps of GAMA galaxies (cores up to 1000-2800 sky RMS) such
fits end 0.10 mag from Lange et al.'s (median); with the sigma maps that come with the stamps
0.018 mag, with any fixed gain within a factor 2 of theirs 0.016-0.023 mag, and with the gain
measured here 0.021 mag (``benchmarks/results/2026-12-07-vm-cpu-real-data-gain.md``).

The variance of a pixel is ``rms² (1 + S / K)``: the sky's, plus the photon noise of the
sky-subtracted signal S, equal to the sky's at the *knee* K.  :func:`estimate_gain` measures K
from how the pixel-to-pixel scatter grows with the signal:

* each pixel's scatter is its residual from a quartic fitted to its 5 x 5 neighbourhood
  (a fixed linear filter: smooth light and its curvature cancel, noise does not), and its signal
  that fit's value at the centre;
* the pixels are binned by signal in sky RMS (``SNR_EDGES``), each bin's variance is the
  robust (MAD) variance of its residuals, and ``v = a + b S`` is fitted over the bins
  (weighted by their counts);
* K = a / b.  The filter scales the sky's and the photon noise's variance by the same factor,
  correlated (resampled coadds) or not, so K does not depend on it, and the gain is
  ``K / rms²`` electrons per image unit (rms: the cutout's sky RMS, as the sigma map uses).

Accuracy: within a factor 1.7 on simulated Sérsic galaxies with Poisson noise (n 1-4, gains
0.5 and 2); 0.6-2.4 times the gain of their own sigma maps on 9 of ProFit's 10 KiDS stamps,
1.0-4.1 on 6 of the 10 SDSS ones (the others: not seen).  Structure the quartic cannot follow
(spiral arms, HII regions, a core at peak S/N ~ 6000 in pure Gaussian noise) only raises the
scatter, i.e. errs on the side of more noise; in pure Gaussian noise 1 of 30 bright simulated
galaxies (peak S/N 300-1300) got a spurious gain.  Where the photon noise is not seen (a slope
below 3 of its standard errors, fewer than three bins of ``MIN_BIN_PIXELS`` pixels: a faint
galaxy, whose photon noise is below the sky's anyway), None is returned and the sigma map
stays the sky RMS.  Cosmic rays (raw single exposures) and other sharp structure also make the
scatter grow; a gain that would give a sky left in the image more photon noise than its
measured RMS is refused for that reason (``SKY_PHOTON_SLACK``), but on a sky-subtracted raw
exposure full of cosmic rays the gain may come out low (more noise): give the gain there.
"""

from __future__ import annotations

import math

import numpy as np

from .noise import robust_stats

__all__ = ["estimate_gain", "SNR_EDGES", "MIN_BIN_PIXELS", "MIN_SLOPE_SIGNIFICANCE", "SKY_PHOTON_SLACK"]

#: Signal bins, in sky RMS: the sky (-3..3) anchors the intercept, the rest the slope.
SNR_EDGES = (-3.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6)
#: Pixels a bin needs to count (a MAD variance from 20 pixels is good to ~35 %).
MIN_BIN_PIXELS = 20
#: The slope must exceed this many of its standard errors to be taken as photon noise.
MIN_SLOPE_SIGNIFICANCE = 3.0
#: A gain is refused where the photon noise it gives the sky level (an image that still holds
#: its sky) exceeds this multiple of the sky's measured variance, which holds that noise and
#: more (read noise).  The slack covers the RMS's own error.  NTT's raw EMMI frame (sky 6850
#: ADU, RMS 65: at most 1/1.6 ADU per e-) "measured" 0.08 e-/ADU from its cosmic rays.
SKY_PHOTON_SLACK = 1.5
# a MAD-based variance from n normal deviates has a variance of about 2.7 v² / n (1.36² x 2 / n)
_MAD_VARIANCE_FACTOR = 2.7


def _polynomial_filter(half: int = 2, order: int = 4) -> np.ndarray:
    """The (2 half + 1)² filter giving the value at the centre of the least-squares 2-d
    polynomial of total degree ``order`` through the window."""
    r = np.arange(-half, half + 1, dtype=float)
    yy, xx = np.meshgrid(r, r, indexing="ij")
    basis = np.stack([xx ** i * yy ** j for i in range(order + 1) for j in range(order + 1 - i)], -1)
    basis = basis.reshape(-1, basis.shape[-1])
    return (np.linalg.inv(basis.T @ basis) @ basis.T)[0].reshape(2 * half + 1, 2 * half + 1)


# quartic, not quadratic: a quadratic's residual on a compact, PSF-sharp core (FWHM 1-3 px) at
# peak S/N 150-6000 in pure Gaussian noise grew with the signal as photon noise does, and
# "found" a gain where there was none (4 of 8 such galaxies; the quartic 1 of 8, at S/N 6000)
_SMOOTH = _polynomial_filter()


def _filtered(data: np.ndarray, ok: np.ndarray):
    """(smooth, residual, whole) on the windows that fit in the image (valid correlation): the
    polynomial's value at each window's centre, the centre pixel minus it, and whether the
    window holds only ``ok`` pixels.  Summed over the 25 shifted views (several times faster
    than a strided einsum)."""
    k = _SMOOTH.shape[0]
    h, w = data.shape[0] - k + 1, data.shape[1] - k + 1
    smooth = np.zeros((h, w))
    whole = np.ones((h, w), bool)
    for dy in range(k):
        for dx in range(k):
            smooth += _SMOOTH[dy, dx] * data[dy:dy + h, dx:dx + w]
            whole &= ok[dy:dy + h, dx:dx + w]
    centre = k // 2
    return smooth, data[centre:centre + h, centre:centre + w] - smooth, whole


def estimate_gain(image: np.ndarray, bad: np.ndarray, sky_level: float, sky_rms: float) -> float | None:
    """Effective gain (electrons per image unit, > 0) of ``image`` from its pixel statistics, or
    None where its photon noise cannot be seen (see the module docstring).

    ``bad``: True where a pixel is not to be used; ``sky_level``, ``sky_rms``: the measured
    background and its RMS (image units, rms > 0), as the sigma map will use them.
    """
    if not (sky_rms > 0 and math.isfinite(sky_rms) and math.isfinite(sky_level)):
        raise ValueError(f"sky_rms must be finite and > 0, got {sky_rms} (level {sky_level})")
    data = np.asarray(image, float) - sky_level
    ok = ~np.asarray(bad, bool) & np.isfinite(data)
    if min(data.shape) < _SMOOTH.shape[0]:
        return None
    signal, residual, whole = _filtered(np.where(ok, data, 0.0), ok)
    signal, residual = signal[whole], residual[whole]
    snr = signal / sky_rms
    level, variance, count = [], [], []
    for lo, hi in zip(SNR_EDGES[:-1], SNR_EDGES[1:]):
        sel = (snr >= lo) & (snr < hi)
        n = int(sel.sum())
        if n < MIN_BIN_PIXELS:
            continue
        level.append(float(np.median(signal[sel])))
        variance.append(robust_stats(residual[sel], rounds=0)[1] ** 2)
        count.append(n)
    if len(level) < 3:
        return None
    s, v, n = np.array(level), np.array(variance), np.array(count, float)
    if not np.all(v > 0):
        return None
    w = n / v ** 2                       # inverse variance of each bin's variance (up to a factor)
    design = np.stack([np.ones_like(s), s], 1)
    cov = np.linalg.inv(design.T @ (design * w[:, None]))
    a, b = cov @ (design.T @ (w * v))
    se_b = math.sqrt(cov[1, 1] * _MAD_VARIANCE_FACTOR)
    if not (a > 0 and b > MIN_SLOPE_SIGNIFICANCE * se_b):
        return None
    gain = float(a / b / sky_rms ** 2)
    if sky_level / gain > SKY_PHOTON_SLACK * sky_rms ** 2:
        # the sky left in the image would then have more photon noise than its measured RMS
        # holds: the scatter grew with the signal for another reason (cosmic rays, structure)
        return None
    return gain
