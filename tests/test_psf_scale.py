"""A PSF file sampled at another pixel scale than its image (its header says which) is brought
onto the image's grid: used with an integer oversampling where the scales allow, resampled
otherwise; the fit then recovers the galaxy, which the PSF taken at face value does not."""

import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from galmoss_auto.fitting import Cutout, fit, read_cutout
from galmoss_auto.fitting.psf_scale import lanczos_matrix, match_psf_scale, resample_psf

sys.path.insert(0, str(Path(__file__).parent))
from psf_helpers import gaussian_psf, moment_fwhm  # noqa: E402

IMAGE_SCALE = 0.396   # arcsec/px (SDSS)
FWHM_PX = 3.2         # PSF FWHM in image pixels


def _psf_file(path, psf_scale, n=61):
    """A Gaussian PSF of FWHM_PX image pixels, sampled at ``psf_scale`` arcsec/px."""
    hdu = fits.PrimaryHDU(gaussian_psf(n, FWHM_PX * IMAGE_SCALE / psf_scale) * 40.0)  # peak-normalised-like
    hdu.header["PIXSCALE"] = psf_scale
    hdu.writeto(path)


def test_lanczos_resampling_keeps_constants_centres_and_widths():
    w = lanczos_matrix(21, 15, 1.3)
    assert np.allclose(w.sum(axis=1), 1.0)
    psf = gaussian_psf(41, 6.0)
    out = resample_psf(psf, 1.5)           # coarser: FWHM 6 -> 4 of the new pixels
    assert out.shape == (27, 27) and out.sum() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(out), out.shape) == (13, 13)
    assert moment_fwhm(out) == pytest.approx(4.0, rel=0.002)
    fine = resample_psf(psf, 0.5)          # finer: FWHM 12 new pixels
    assert moment_fwhm(fine) == pytest.approx(12.0, rel=0.002)


def test_match_psf_scale_cases():
    psf = gaussian_psf(31, 5.0)
    same, k, note = match_psf_scale(psf, 0.396, 0.396)
    assert same is psf and k == 1 and note is None
    # an integer ratio: the PSF is kept and used as oversampled
    kept, k, note = match_psf_scale(psf, 0.198, 0.396)
    assert kept is psf and k == 2 and "oversampling 2" in note
    # otherwise resampled to image scale / ceil(ratio), never coarser than it was
    res, k, note = match_psf_scale(psf, 0.25, 0.396)
    assert k == 2 and "resampled" in note
    assert moment_fwhm(res, 2) == pytest.approx(5.0 * 0.25 / 0.396, rel=0.002)
    # unknown scales, or an oversampling the caller chose: untouched
    for args in ((None, 0.396), (0.25, None)):
        assert match_psf_scale(psf, *args)[0] is psf
    assert match_psf_scale(psf, 0.25, 0.396, oversampling=3)[:2] == (psf, 3)


def test_reader_brings_a_finer_psf_file_onto_the_image_grid(tmp_path):
    img = np.zeros((48, 48), np.float32)
    img[24, 24] = 1.0
    _psf_file(tmp_path / "psf25.fits", 0.25)
    _psf_file(tmp_path / "psf198.fits", 0.198)
    fits.PrimaryHDU(gaussian_psf(25, FWHM_PX)).writeto(tmp_path / "plain.fits")   # no scale: as is
    for name, k in (("psf25", 2), ("psf198", 2), ("plain", 1)):
        c = read_cutout(img, sigma=np.ones_like(img), psf=str(tmp_path / f"{name}.fits"),
                        pixel_scale=IMAGE_SCALE)
        assert c.psf_oversampling == k, name
        assert moment_fwhm(c.psf, c.psf_oversampling) == pytest.approx(FWHM_PX, rel=0.005), name
        assert c.psf.sum() == pytest.approx(1.0)
    # without the image's pixel scale nothing can be matched: the PSF is used as given
    c = read_cutout(img, sigma=np.ones_like(img), psf=str(tmp_path / "psf25.fits"))
    assert c.psf_oversampling == 1 and "psf_note" not in c.meta


def test_fit_with_a_psf_at_another_scale_recovers_the_galaxy(tmp_path):
    galsim = pytest.importorskip("galsim")
    n, r_e, sersic_n, mag, zp = 48, 3.0, 1.5, 16.0, 25.0
    psf_g = galsim.Gaussian(fwhm=FWHM_PX)
    gal = galsim.Sersic(n=sersic_n, half_light_radius=r_e, flux=10 ** (-0.4 * (mag - zp)))
    img = galsim.Convolve(gal, psf_g).drawImage(nx=n, ny=n, scale=1.0, method="auto").array
    rng = np.random.default_rng(2)
    sigma = np.full(img.shape, 0.5)
    img = img + rng.normal(0, 0.5, img.shape)
    _psf_file(tmp_path / "psf25.fits", 0.25)
    right = read_cutout(img, id="matched", sigma=sigma, psf=str(tmp_path / "psf25.fits"),
                        pixel_scale=IMAGE_SCALE, zeropoint=zp)
    naive_psf = fits.getdata(tmp_path / "psf25.fits")      # the same file taken at face value
    naive = Cutout("naive", img, sigma=sigma, psf=naive_psf / naive_psf.sum(), zeropoint=zp)
    cat = fit([right, naive], errors="none")
    ok, bad = cat[0], cat[1]
    assert ok["sersic_r_e"] == pytest.approx(r_e, rel=0.05)
    assert ok["sersic_n"] == pytest.approx(sersic_n, abs=0.2)
    assert ok["sersic_mag"] == pytest.approx(mag, abs=0.03)
    # a PSF 1.58x too wide: the galaxy comes out far too small and too concentrated (measured:
    # r_e 2.07 px, n 9.2), the failure this prevents
    assert bad["sersic_r_e"] < 0.8 * r_e and bad["sersic_n"] > 3.0
