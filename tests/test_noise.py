"""The background and noise measured from a cutout's own pixels (fitting/noise.py)."""

import numpy as np
import pytest

from galmoss_auto.fitting.noise import (STRUCTURED_SKY_RATIO, SkyEstimate, estimate_sky,
                                        pixel_noise, sky_left_in)


def _exponential(size, scale, peak):
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(xx - (size - 1) / 2, yy - (size - 1) / 2)
    return peak * np.exp(-r / scale)


def test_pixel_noise_ignores_gradients_and_sources():
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, 2.0, (64, 64))
    yy, xx = np.mgrid[0:64, 0:64]
    ramp = 5.0 * xx + 0.05 * (yy - 32) ** 2            # a gradient far above the noise
    assert pixel_noise(noise + ramp, np.ones((64, 64), bool)) == pytest.approx(2.0, rel=0.08)
    # pixels outside ``ok`` are never used, however bright
    image = noise + ramp
    image[20:30, 20:30] += 1e6
    ok = np.ones((64, 64), bool)
    ok[20:30, 20:30] = False
    assert pixel_noise(image, ok) == pytest.approx(2.0, rel=0.08)
    assert np.isnan(pixel_noise(image, np.zeros((64, 64), bool)))


def test_galaxy_filling_the_cutout_does_not_inflate_the_noise():
    """A bright galaxy whose light covers the whole cutout: the pixels outside its segment are
    still its wings, whose spread would be taken for noise.  The estimate falls back to the
    pixel-to-pixel noise (the true 1.0, not several times it)."""
    rng = np.random.default_rng(4)
    image = _exponential(48, 14.0, 400.0) + rng.normal(0.0, 1.0, (48, 48))
    sky = estimate_sky(image, np.zeros(image.shape, bool))
    assert sky.method == "pixel-noise"
    assert sky.rms == pytest.approx(1.0, rel=0.15)


def test_flat_sky_keeps_its_own_rms_even_with_correlated_noise():
    """Resampled or smoothed images have correlated noise, which pixel-to-pixel differences
    underestimate (here 2.4×): where the sky around the galaxy is flat, its own RMS is the
    estimate."""
    rng = np.random.default_rng(5)
    white = rng.normal(0.0, 1.0, (100, 100))
    kernel = np.array([0.25, 0.5, 0.25])                # a light smoothing, as a resampling does
    smooth = np.apply_along_axis(lambda v: np.convolve(v, kernel, "same"), 0, white)
    smooth = np.apply_along_axis(lambda v: np.convolve(v, kernel, "same"), 1, smooth)
    image = smooth + _exponential(100, 2.0, 30.0)
    sky = estimate_sky(image, np.zeros(image.shape, bool))
    true_rms = float(np.std(smooth[5:-5, 5:-5]))
    assert sky.method == "sep"
    assert sky.rms == pytest.approx(true_rms, rel=0.1)
    # the pixel-to-pixel noise is far below the RMS, as where a galaxy fills the cutout: the
    # flat sky (no trend towards the centre) is what keeps the RMS
    assert sky.rms > STRUCTURED_SKY_RATIO * pixel_noise(image, np.ones(image.shape, bool))


def test_sky_left_in():
    assert sky_left_in(SkyEstimate(level=100.0, rms=3.0, n_pixels=1000))
    assert sky_left_in(SkyEstimate(level=-20.0, rms=3.0, n_pixels=1000))
    assert not sky_left_in(SkyEstimate(level=10.0, rms=3.0, n_pixels=1000))   # 3.3 RMS: a galaxy's wings
    assert not sky_left_in(SkyEstimate(level=1.0, rms=0.0, n_pixels=1000))
    # a galaxy filling the cutout: its light, not the sky, sets the level
    assert not sky_left_in(SkyEstimate(level=100.0, rms=3.0, n_pixels=1000, method="pixel-noise"))
