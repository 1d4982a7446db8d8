"""The effective gain measured from a cutout's own pixels (fitting/gain.py) and its use in the
estimated sigma map (complete_noise, run, fit)."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galmoss_auto.fitting.cutout import Cutout
from galmoss_auto.fitting.gain import estimate_gain
from galmoss_auto.fitting.noise import complete_noise, estimate_sky

SKY_RMS = 5.0


def _galaxy(n=1.0, r_e=8.0, flux=2e5, size=128):
    """A PSF-free elliptical Sérsic profile, its centre softened by 0.7 px (the exact shape
    does not matter here), summing to ``flux``."""
    y, x = np.mgrid[:size, :size] - (size - 1) / 2.0
    r = np.hypot(np.hypot(x, y / 0.7), 0.7)
    b = 2.0 * n - 1.0 / 3.0 + 0.009876 / n
    img = np.exp(-b * ((r / r_e) ** (1.0 / n) - 1.0))
    return img * flux / img.sum()


def _noisy(img, gain, seed):
    """Sky RMS SKY_RMS image units; with ``gain`` (e-/image unit), Poisson noise of sky +
    galaxy in electrons, sky subtracted."""
    rng = np.random.default_rng(seed)
    if gain is None:
        return img + rng.normal(0.0, SKY_RMS, img.shape)
    sky = (SKY_RMS * gain) ** 2        # electrons per pixel of sky giving that RMS
    return rng.poisson(gain * img + sky) / gain - sky / gain


def _estimate(image):
    bad = np.zeros(image.shape, bool)
    sky = estimate_sky(image, bad)
    return estimate_gain(image, bad, sky.level, sky.rms)


@pytest.mark.parametrize("n,r_e,flux", [(1.0, 8.0, 2e5), (4.0, 5.0, 2e5), (2.5, 12.0, 5e5)])
@pytest.mark.parametrize("gain", [0.5, 2.0])
def test_gain_of_poisson_noise_recovered(n, r_e, flux, gain):
    est = _estimate(_noisy(_galaxy(n, r_e, flux), gain, seed=3))
    assert est is not None and gain / 1.7 < est < gain * 1.7


def test_no_photon_noise_no_gain():
    # Gaussian noise of constant RMS on bright galaxies (peak S/N 300-1300): no slope to see, in
    # 29 of these 30 (the other: a spurious gain whose photon noise at the peak is 4.5x the sky's)
    found = [_estimate(_noisy(_galaxy(*p), None, seed=seed))
             for p in ((2.5, 12.0, 5e5), (4.0, 5.0, 2e5), (1.0, 8.0, 2e5)) for seed in range(10)]
    assert sum(g is not None for g in found) <= 1


def test_faint_galaxy_no_gain():
    # peak S/N ~ 6: the photon noise is far below the sky's, nothing is measured (nor needed)
    assert _estimate(_noisy(_galaxy(1.0, 20.0, 2e4), 2.0, seed=5)) is None


def test_bad_sky_rms_raises():
    with pytest.raises(ValueError, match="sky_rms"):
        estimate_gain(np.zeros((20, 20)), np.zeros((20, 20), bool), 0.0, 0.0)


def test_complete_noise_uses_the_measured_gain():
    truth = _galaxy(4.0, 5.0, 2e5)
    cut = Cutout(id="g", image=_noisy(truth, 2.0, seed=6))
    cols = complete_noise(cut)
    assert cut.meta["sources"]["gain"] == "estimated"
    assert cols["sigma_gain"] == pytest.approx(cut.meta["gain"])
    assert 2.0 / 1.7 < cols["sigma_gain"] < 2.0 * 1.7
    true_sigma = np.sqrt(SKY_RMS ** 2 + truth / 2.0)
    core = truth > 100 * SKY_RMS
    # the core's sigma follows its photon noise (within the gain's accuracy), not the sky's
    assert np.all(cut.sigma[core] > 2 * SKY_RMS)
    assert np.median(cut.sigma[core] / true_sigma[core]) == pytest.approx(1.0, abs=0.3)


def test_complete_noise_given_gain_is_kept():
    cut = Cutout(id="g", image=_noisy(_galaxy(), 2.0, seed=7),
                 meta={"gain": 3.0, "sources": {"gain": "manifest"}})
    cols = complete_noise(cut)
    assert cols["sigma_gain"] == 3.0 and cut.meta["sources"]["gain"] == "manifest"


def test_run_and_fit_report_the_gain(tmp_path):
    from galmoss_auto.pipelines.cli import main
    img = _noisy(_galaxy(4.0, 5.0, 2e5, size=96), 2.0, seed=8).astype(np.float32)
    fits.PrimaryHDU(img).writeto(tmp_path / "g.fits")
    assert main(["fit", str(tmp_path / "g.fits"), "--zeropoint", "25", "--errors", "none",
                 "--out", str(tmp_path / "fit")]) == 0
    row = Table.read(tmp_path / "fit" / "catalog.fits")[0]
    assert row["gain_source"] == "estimated" and 1.0 < row["sigma_gain"] < 4.0
    header = fits.Header({"GAIN": 2.0})
    fits.PrimaryHDU(img, header).writeto(tmp_path / "h.fits")
    assert main(["fit", str(tmp_path / "h.fits"), "--zeropoint", "25", "--errors", "none",
                 "--out", str(tmp_path / "fit2")]) == 0
    row = Table.read(tmp_path / "fit2" / "catalog.fits")[0]
    assert row["gain_source"] == "header" and row["sigma_gain"] == pytest.approx(2.0)


@pytest.mark.shared
def test_kids_stamps_gain_near_their_sigma_maps(shared_data):
    """ProFit's KiDS stamps come with sigma maps built with an effective gain (var = a + S / g,
    g = 1.7-1.9e13 per image unit): the gain measured from the images alone is within 2.5x
    (0.6-2.4x on all 10; the fits are the same for any gain within a factor 2 of theirs)."""
    folder = shared_data / "profit_gama_kids_sdss" / "KiDS"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    ratios = []
    for name in ("G265911", "G266033", "G267199", "G278109"):
        img = fits.getdata(folder / f"{name}fitim.fits").astype(float)
        sig = fits.getdata(folder / f"{name}sigma.fits").astype(float)
        ok = np.isfinite(img) & np.isfinite(sig) & (sig > 0)
        slope = np.polyfit(img[ok], sig[ok] ** 2, 1)[0]
        ratios.append(_estimate(img) * slope)
    assert all(0.4 < r < 2.5 for r in ratios), ratios


def test_sky_left_in_is_consistent_or_refused():
    # Poisson sky left in (not subtracted): the measured gain gives the sky level no more photon
    # noise than its RMS holds, and is kept ...
    gain = 2.0
    rng = np.random.default_rng(9)
    truth = _galaxy(4.0, 5.0, 2e5)
    sky = (SKY_RMS * gain) ** 2 / gain          # image units, RMS SKY_RMS
    image = rng.poisson(gain * (truth + sky)) / gain
    bad = np.zeros(image.shape, bool)
    level = estimate_sky(image, bad)
    est = estimate_gain(image, bad, level.level, level.rms)
    assert est is not None and gain / 1.7 < est < gain * 1.7
    # ... but on a pedestal 100x the sky, a gain this low would give the sky level more photon
    # noise than its RMS holds: refused (the rule that catches a raw frame's cosmic rays; a
    # bias pedestal left in is its price, and such data should come with their gain)
    est = estimate_gain(image + 100 * sky, bad, level.level + 100 * sky, level.rms)
    assert est is None


@pytest.mark.shared
def test_raw_frame_with_cosmic_rays_gets_no_gain(shared_data):
    """NTT's raw EMMI frame (sky 6850 ADU left in, RMS 65) has scatter growing with the signal
    from cosmic rays and saturated stars: its 0.08 e-/ADU would give the sky 5 times the noise
    it has, and is refused."""
    path = shared_data / "sep_ntt_emmi_field" / "image.fits"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the frame's 1992 ESO-LOG cards
        image = fits.getdata(path).astype(float)
    bad = ~np.isfinite(image)
    sky = estimate_sky(image, bad)
    assert sky.level > 50 * sky.rms
    assert estimate_gain(image, bad, sky.level, sky.rms) is None
