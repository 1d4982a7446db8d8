"""A PSF's pedestal (fitting/psf_pedestal.py): a flat level left under a PSF image is found,
subtracted and reported; wings, noise and small levels are left alone."""

import io

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galmoss_auto.fitting.cutout import Cutout, CutoutError, normalise_psf, read_cutout
from galmoss_auto.fitting.psf_pedestal import psf_pedestal, remove_psf_pedestal
from galmoss_auto.pipelines.config import moffat_psf


def _moffat(fwhm=3.5, beta=3.0):
    """A Moffat on 41², peak 1 (levels below are in units of the peak)."""
    psf = moffat_psf(fwhm, beta, 41)
    return psf / psf.max()


def test_a_flat_level_is_found_and_wings_noise_and_small_levels_are_not():
    psf = _moffat()
    assert psf_pedestal(psf) == 0.0                                   # wings fall to the corners
    for beta in (1.5, 2.0):                                          # wings that fill the image
        assert psf_pedestal(_moffat(fwhm=8.0, beta=beta)) == 0.0
    for level in (1e-3, -2e-3, 5e-4):
        assert psf_pedestal(psf + level) == pytest.approx(level, rel=0.05)
    assert psf_pedestal(psf + 1e-5) == 0.0                          # 0.1 % of the sum: too small
    rng = np.random.default_rng(2)
    noisy = psf + rng.normal(0.0, 1e-3, psf.shape)                   # a star stack's noise
    assert psf_pedestal(noisy) == 0.0
    assert psf_pedestal(noisy + 3e-3) == pytest.approx(3e-3, rel=0.1)
    assert psf_pedestal(psf[17:24, 17:24] + 1e-2) == 0.0            # 7 px: no border to judge
    assert psf_pedestal(np.ones((31, 31))) == 0.0                    # a constant PSF is meant so
    assert psf_pedestal(psf + 0.2) == 0.0                            # no core well above it
    cleaned, note = remove_psf_pedestal(psf - 2e-3, "p.fits")
    assert np.abs(cleaned - psf).max() < 1e-4
    assert note.startswith("p.fits: PSF's border is flat at -0.002 of its peak")
    assert remove_psf_pedestal(psf, "p.fits")[1] is None


def test_normalise_psf_subtracts_the_pedestal_before_the_unit_sum():
    psf = _moffat()
    clean, note = normalise_psf(psf)
    assert note is None and clean.sum() == pytest.approx(1.0)
    shifted, note = normalise_psf(psf - 2e-3, "p.fits")
    assert "subtracted" in note and np.abs(shifted - clean).max() < 2e-3 * clean.max()
    dip = np.full((41, 41), 0.05)
    dip[20, 20] = 1.0
    dip[15:20, 15:20] = 0.0                      # nothing left once the flat level is off
    with pytest.raises(CutoutError, match="flat border level"):
        normalise_psf(dip, "dip.fits")


def test_readers_record_the_subtraction(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 1.0, (48, 48))
    path = tmp_path / "psf.fits"
    fits.PrimaryHDU((_moffat() - 2e-3).astype(np.float32)).writeto(path)
    cut = read_cutout(image, psf=str(path), zeropoint=25.0)
    assert f"{path}: PSF's border is flat" in cut.meta["psf_note"]
    assert cut.psf.sum() == pytest.approx(1.0) and abs(np.median(cut.psf[0])) < 1e-6
    # the Python API's own Cutout does the same
    direct = Cutout(id="a", image=image, psf=_moffat() - 2e-3)
    assert "subtracted" in direct.meta["psf_note"]
    assert np.allclose(direct.psf, cut.psf, atol=1e-6)
    assert "psf_note" not in Cutout(id="b", image=image, psf=_moffat()).meta
    from galmoss_auto.data_scripts.psf import read_psf_file
    fits.PrimaryHDU((_moffat() - 2e-3).astype(np.float32), fits.Header({"PIXSCALE": 0.2})).writeto(
        tmp_path / "sim_psf.fits")
    with pytest.warns(UserWarning, match="subtracted"):
        read_psf_file(tmp_path / "sim_psf.fits")


def test_run_fits_through_an_over_subtracted_psf_like_a_clean_one(tmp_path):
    """A galaxy convolved with a Moffat, fitted by `run` once with that PSF and once with the
    same PSF over-subtracted by 0.2 % of its peak (-21 % of its sum over 41²): the same fit.
    Before the PSF's pedestal was removed, the second came out 0.11 mag faint with r_e 8 %
    too large."""
    from galmoss_auto.pipelines.config import RunConfig
    from galmoss_auto.pipelines.run import run

    rng = np.random.default_rng(5)
    psf = _moffat()
    yy, xx = np.indices((64, 64)) - 31.5
    r = np.hypot(xx, yy / 0.6)
    galaxy = np.exp(-1.68 * (r / 6.0 - 1.0)) * 60.0
    kernel = np.zeros((64, 64))
    kernel[11:52, 11:52] = psf / psf.sum()       # centred on pixel (31, 31)
    blurred = np.fft.irfft2(np.fft.rfft2(galaxy) * np.fft.rfft2(np.fft.ifftshift(kernel)), s=(64, 64))
    image = blurred + rng.normal(0.0, 1.0, (64, 64))
    cats = {}
    for name, p in (("clean", psf), ("pedestal", psf - 2e-3)):
        d = tmp_path / name
        d.mkdir()
        fits.PrimaryHDU(image.astype(np.float32)).writeto(d / "g.fits")
        fits.PrimaryHDU(p.astype(np.float32)).writeto(tmp_path / f"{name}_psf.fits")
        run(RunConfig(input=str(d), out=str(tmp_path / f"out_{name}"), workers=0, progress=False,
                      mask="sep", init="sep", errors="none", zeropoint=25.0,
                      psf=str(tmp_path / f"{name}_psf.fits")), stream=io.StringIO())
        cats[name] = Table.read(tmp_path / f"out_{name}" / "catalog.fits")[0]
    clean, shifted = cats["clean"], cats["pedestal"]
    assert "PSF's border is flat" in str(shifted["message"]) and shifted["flags"] == clean["flags"]
    assert abs(shifted["sersic_mag"] - clean["sersic_mag"]) < 0.01
    assert abs(np.log10(shifted["sersic_r_e"] / clean["sersic_r_e"])) < 0.01


@pytest.mark.shared
def test_abdurroufs_stacked_sdss_psfs_carry_a_pedestal(shared_data):
    """The stacked SDSS PSFs flatten beyond ~10 arcsec to a level that holds 9-27 % of their
    sum (read with astropy, measured here); the HSC and KiDS PSFs have none."""
    folder = shared_data / "psf_sdss_empirical_abdurrouf"
    for band, share in (("g", 0.088), ("r", 0.107), ("i", 0.203), ("u", 0.270)):
        psf = fits.getdata(folder / f"psf_emp_sdss_{band}.fits.gz").astype(float)
        level = psf_pedestal(psf)
        assert level * psf.size / psf.sum() == pytest.approx(share, abs=0.005)
    for path in (shared_data / "pysersic_hsc_decals" / "hsc_examp_gals" / "fits_converted" / "gal2_psf.fits",
                 shared_data / "profit_gama_kids_sdss" / "KiDS" / "G266035psfim.fits",
                 shared_data / "imfit_ic3478" / "psf_moffat_51.fits"):
        assert psf_pedestal(fits.getdata(path).astype(float)) == 0.0
