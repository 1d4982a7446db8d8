"""The catalog's ``flags`` column: a bitmask, one bit per condition.

A galaxy with ``flags == 0`` was fitted without incident.  Bits below 2**8 are set by the
fitter, bits from 2**8 up by the pipeline stages around it.  Bits are never reused: a new
condition gets a new bit.
"""

from enum import IntFlag


class Flag(IntFlag):
    """Conditions recorded in the ``flags`` column (bitwise OR of these values)."""

    #: The solver stopped at its iteration limit before meeting the convergence criterion.
    NOT_CONVERGED = 1
    #: At least one free parameter ended on a box bound (the fit may be unphysical there).
    AT_BOUND = 2
    #: The cutout could not be used (unreadable file, wrong shape, no valid pixel, ...);
    #: no fit was made and the parameter columns are NaN.
    BAD_INPUT = 4
    #: The fit produced a non-finite parameter or chi^2; parameter columns are NaN.
    FIT_FAILED = 8
    #: J^T W J was singular or not positive definite; the ``_err`` columns are NaN.
    COVARIANCE_FAILED = 16
    #: Some pixels were masked automatically (NaN/inf data, a fill value where a stamp had no
    #: data, non-positive or non-finite sigma; saturated pixels).  The count is in the
    #: ``n_bad_pixels`` column (saturated ones in ``n_saturated``).  Informational.
    AUTO_MASKED_PIXELS = 32
    #: Fewer valid pixels than free parameters + 1: chi2_nu is undefined.
    TOO_FEW_PIXELS = 64
    #: A neighbour fitted together with the target ended on a box bound (its n, q, the window
    #: around its start or its growth limit); the target's own parameters did not (that is
    #: AT_BOUND).
    #: Informational: a faint neighbour is often poorly constrained.  The parameter on its bound
    #: is held fixed in the covariance (its errors are NaN; all of the neighbour's, where its
    #: magnitude is on a bound), so the target's errors stand.
    NEIGHBOUR_AT_BOUND = 128
    #: The sigma map was estimated from the image (no sigma/weight map was given).
    SIGMA_ESTIMATED = 256
    #: The automatic masker failed on this cutout (it raised): only user and bad-pixel masks
    #: were used, or, where a learned masker raised on its chunk, sep's masks
    #: (``mask_method = "sep"``); the reason is in the ``message`` column.
    MASK_FAILED = 512
    #: The initializer failed on this cutout; a generic starting guess was used.
    INIT_FALLBACK = 1024
    #: The central object was not detected by the masker / initializer: nothing near the
    #: centre, or only an object below isophotal S/N 5 (``automask.detect.MIN_CENTRAL_SNR``; a
    #: noise peak, or a galaxy too faint to fit).
    NO_CENTRAL_DETECTION = 2048
    #: No zero-point anywhere (row, header, option, survey): magnitudes use zero-point 0, so
    #: they are -2.5 log10(flux in image units), not calibrated magnitudes.
    NO_ZEROPOINT = 4096
    #: A learned stage ran with a checkpoint trained for another pixel scale or PSF width than
    #: this cutout's (``run --strict`` refuses it instead).
    WEIGHTS_MISMATCH = 8192
    #: The cutout is centred on its target (``run``), but the component fitted as the target
    #: ended far from the centre while a fitted Sérsic neighbour ended on it: the two were
    #: exchanged, so the row holds the component at the centre.  The masker had taken a
    #: brighter neighbour, whose light covers the centre, for the target.
    CENTRE_SWAPPED = 16384
    #: The cutout is centred on its target (``run``), but the target's fitted centre lies far
    #: from the centre and no fitted component lies there: the fit may describe another object.
    CENTRE_OFFSET = 32768
    #: The model has no sky component (``fit`` without one in its model or ``--sky``, ``run
    #: --sky none``), yet the background measured off the sources lies more than
    #: :data:`~galmoss_auto.fitting.noise.SKY_LEFT_IN_RMS` sky RMS from zero: the sky was left
    #: in the image and the galaxy's profile absorbs it (magnitude and r_e are wrong).
    SKY_NOT_MODELLED = 65536
    #: The learned masker (``--mask maskrcnn`` / ``auto``) found no central galaxy in this
    #: cutout, so sep masked it (``mask_method = "sep"``), as ``--mask sep`` would have.
    #: Informational: the network, trained on simulations, misses some real galaxies unlike
    #: any it saw (a bright bulge in a disk filling a 100 x 200 px stamp); sep's own verdict
    #: on the central still applies (NO_CENTRAL_DETECTION below isophotal S/N 5).
    MASK_FALLBACK = 131072
    #: Less than half of a target component's fitted light falls on the cutout
    #: (:mod:`~galmoss_auto.fitting.coverage`): its magnitude and size extrapolate its profile
    #: beyond the data.  Seen where a faint extended galaxy's n, r_e and sky are degenerate (a
    #: disc of mag 17.5 fitted as n 7, r_e 4700 px, mag 12.0 with chi2_nu 1.00), and on a
    #: galaxy too big for its cutout (cut a larger one).
    LIGHT_OFF_CUTOUT = 262144
    #: No PSF anywhere (row, file, extension, companion file, option, survey): the model was
    #: not convolved, so r_e and n describe the galaxy *as seen*, seeing included, not the
    #: galaxy (one much smaller than the PSF is fitted at about the PSF's size).  Not
    #: informational: give ``--psf`` or ``--survey`` (its median PSF).  Where the PSF is truly
    #: negligible (a galaxy many PSF widths across), the flag records that this was assumed.
    NO_PSF = 524288


#: Bits that describe the input or the stages around the fit, not the fit: a row with no other
#: bit set converged inside its bounds, on the pixels it was meant to fit.  Such rows are the
#: labels that training on real cutouts takes (``galmoss-auto train --real``): SIGMA_ESTIMATED
#: alone is on nearly every real cutout without a sigma map.
INFORMATIONAL = (Flag.AUTO_MASKED_PIXELS | Flag.NEIGHBOUR_AT_BOUND | Flag.SIGMA_ESTIMATED
                 | Flag.NO_ZEROPOINT | Flag.WEIGHTS_MISMATCH | Flag.INIT_FALLBACK | Flag.MASK_FALLBACK)


def is_clean_fit(flags) -> bool:
    """True when ``flags`` holds no bit beyond :data:`INFORMATIONAL` (works on arrays too)."""
    import numpy as np
    out = (np.asarray(flags, dtype=np.int64) & ~np.int64(int(INFORMATIONAL))) == 0
    return bool(out) if out.ndim == 0 else out


def describe(flags: int) -> list[str]:
    """Names of the bits set in ``flags``, e.g. ``describe(3) == ['NOT_CONVERGED', 'AT_BOUND']``."""
    return [f.name for f in Flag if int(flags) & int(f)]
