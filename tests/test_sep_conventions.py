"""The conversion of sep measurements to catalog (GALFIT) conventions, and the sep stages on
GalSim images whose truth is known."""

import numpy as np
import pytest

from galmoss_auto.initnet import conventions as cv


def test_concentration_matches_scipy_and_known_values():
    special = pytest.importorskip("scipy.special")
    n = np.array([0.5, 1.0, 2.0, 4.0, 6.0])
    ref = (special.gammaincinv(2 * n, 0.9) / special.gammaincinv(2 * n, 0.5)) ** n
    np.testing.assert_allclose(cv.concentration_from_n(n), ref, rtol=1e-7)
    # Gaussian (n = 0.5): R90/R50 = sqrt(ln 10 / ln 2)
    assert cv.concentration_from_n(0.5) == pytest.approx(np.sqrt(np.log(10) / np.log(2)), rel=1e-7)


def test_n_from_concentration_inverts_and_clips():
    n = np.array([0.3, 0.8, 1.0, 2.5, 4.0, 7.0])
    np.testing.assert_allclose(cv.n_from_concentration(cv.concentration_from_n(n)), n, rtol=5e-3)
    assert cv.n_from_concentration(1.0) == pytest.approx(cv.N_MIN)
    assert cv.n_from_concentration(50.0) == pytest.approx(cv.N_MAX)
    assert np.isnan(cv.n_from_concentration(np.nan))


def test_kron_aperture_conversions():
    special = pytest.importorskip("scipy.special")
    n = 4.0
    b = special.gammaincinv(2 * n, 0.5)
    r1 = special.gamma(3 * n) / (b ** n * special.gamma(2 * n))        # Kron radius / r_e
    f = special.gammainc(2 * n, b * (2.5 * r1) ** (1 / n))
    assert float(cv.kron_fraction(n)) == pytest.approx(f, rel=1e-6)
    assert 0.89 < f < 0.92                                               # Graham & Driver 2005
    radius = lambda g: (special.gammaincinv(2 * n, g) / b) ** n
    assert float(cv.kron_concentration_from_n(n)[0]) == pytest.approx(radius(0.9 * f) / radius(0.5 * f), rel=1e-6)
    assert float(cv.kron_half_radius_ratio(n)[0]) == pytest.approx(radius(0.5 * f), rel=1e-6)
    grid = np.array([0.5, 1.0, 2.0, 4.0, 6.0])
    frac, half = cv.kron_corrections(grid)
    np.testing.assert_allclose(frac, cv.kron_fraction(grid), rtol=1e-3)
    np.testing.assert_allclose(half, cv.kron_half_radius_ratio(grid), rtol=1e-3)
    np.testing.assert_allclose(cv.n_from_kron_concentration(cv.kron_concentration_from_n(grid)), grid, rtol=0.01)


def test_radius_fraction_half_light_is_one():
    np.testing.assert_allclose(cv.sersic_radius_fraction([0.5, 1, 4], 0.5), 1.0, rtol=1e-9)
    with pytest.raises(ValueError, match=r"frac must be in \(0, 1\)"):
        cv.sersic_radius_fraction(1.0, 1.0)


@pytest.mark.parametrize("theta_deg, pa", [(0, 90), (90, 0), (45, -45), (-45, 45), (180, 90),
                                           (135, 45), (-89, 1)])
def test_pa_from_sep_theta(theta_deg, pa):
    # theta: CCW from +x (columns); GALFIT pa: CCW from +y, in (-90, 90]
    assert float(cv.pa_from_sep_theta(np.radians(theta_deg))) == pytest.approx(pa, abs=1e-9)


def test_q_and_radius_and_positions():
    assert float(cv.q_from_sep_axes(2.0, 1.0)) == 0.5
    assert float(cv.q_from_sep_axes(1.0, 2.0)) == 0.5          # order of axes does not matter
    assert float(cv.q_from_sep_axes(1.0, 0.0)) == cv.Q_MIN
    assert float(cv.r_e_major_from_circular(3.0, 0.25)) == pytest.approx(6.0)
    x, y = cv.fits_position(0.0, 9.0)
    assert (float(x), float(y)) == (1.0, 10.0)
    assert float(cv.mag_from_flux(100.0, 25.0)) == pytest.approx(20.0)
    assert np.isnan(cv.mag_from_flux(-1.0, 25.0))


galsim = pytest.importorskip("galsim")


def _scene(n=1.5, hlr=5.0, q=0.6, beta=30.0, flux=8000.0, star=True, seed=3, size=96):
    """A Sérsic galaxy at the centre (+ a star off-centre) with unit Gaussian noise."""
    psf = galsim.Moffat(beta=3.0, fwhm=2.5)
    gal = galsim.Sersic(n=n, half_light_radius=hlr, flux=flux).shear(q=q, beta=beta * galsim.degrees)
    img = galsim.Convolve(gal, psf).drawImage(nx=size, ny=size, scale=1.0, offset=(0.3, -0.4)).array
    if star:
        img = img + galsim.Convolve(galsim.DeltaFunction(flux=4000.0), psf).drawImage(
            nx=size, ny=size, scale=1.0, offset=(25.0, 20.0)).array
    img = img + np.random.default_rng(seed).normal(0, 1, img.shape)
    truth = {"x": size / 2 + 0.5 + 0.3, "y": size / 2 + 0.5 - 0.4, "mag": 25 - 2.5 * np.log10(flux),
             "r_e": hlr / np.sqrt(q), "n": n, "q": q, "pa": beta - 90.0}
    star_yx = (int(round(size / 2 - 0.5 + 20)), int(round(size / 2 - 0.5 + 25)))
    return img, psf.drawImage(nx=25, ny=25, scale=1.0).array, truth, star_yx


def _cutout(img, psf):
    from galmoss_auto.fitting.cutout import Cutout
    return Cutout(id="g", image=img, sigma=np.ones_like(img), psf=psf, zeropoint=25.0)


def test_sep_masker_masks_star_keeps_galaxy():
    from galmoss_auto.automask.sep_masker import SepMasker
    img, psf, truth, (sy, sx) = _scene()
    res = SepMasker()(_cutout(img, psf))
    assert res.flags == 0 and res.detection.central >= 0
    assert res.mask[sy - 2:sy + 3, sx - 2:sx + 3].all()        # the star's core is masked
    cy, cx = int(truth["y"]) - 1, int(truth["x"]) - 1
    assert not res.mask[cy - 6:cy + 7, cx - 6:cx + 7].any()     # the galaxy is not
    assert res.columns["mask_n_objects"] >= 2


def test_sep_initializer_close_to_truth():
    from galmoss_auto.automask.sep_masker import SepMasker
    from galmoss_auto.initnet.sep_init import SepInitializer
    img, psf, truth, _ = _scene(n=1.0, hlr=6.0, q=0.5, beta=120.0)
    cut = _cutout(img, psf)
    m = SepMasker()(cut)
    cut.mask = cut.mask | m.mask
    p = SepInitializer()(cut, m.detection).params
    assert p["x"] == pytest.approx(truth["x"], abs=0.3)
    assert p["y"] == pytest.approx(truth["y"], abs=0.3)
    assert p["mag"] == pytest.approx(truth["mag"], abs=0.2)
    assert p["r_e"] == pytest.approx(truth["r_e"], rel=0.25)
    assert p["q"] == pytest.approx(truth["q"], abs=0.1)
    assert p["pa"] == pytest.approx(truth["pa"], abs=8.0)     # 120 - 90 = 30 deg
    assert 0.5 < p["n"] < 2.0


def test_initializer_without_detection_falls_back():
    from galmoss_auto.fitting.flags import Flag
    from galmoss_auto.initnet.sep_init import SepInitializer
    # Only a bright source in a corner, far beyond the central-search radius.
    img = np.random.default_rng(0).normal(0, 0.01, (48, 48))
    img[4:7, 4:7] += 50.0
    res = SepInitializer()(_cutout(img, None))
    assert res.flags & Flag.INIT_FALLBACK and res.flags & Flag.NO_CENTRAL_DETECTION
    assert res.params["x"] == pytest.approx(24.5) and res.params["y"] == pytest.approx(24.5)


def test_noise_peak_at_the_centre_is_not_a_detection():
    """On blank sky sep takes a noise peak near the centre for the central object on most
    cutouts; below isophotal S/N 5 it is flagged NO_CENTRAL_DETECTION by the masker and the
    initializer (kept unmasked, its moments still the start).  A faint galaxy is not."""
    from galmoss_auto.automask.detect import MIN_CENTRAL_SNR
    from galmoss_auto.automask.sep_masker import SepMasker
    from galmoss_auto.fitting.flags import Flag
    from galmoss_auto.initnet.sep_init import SepInitializer
    rng = np.random.default_rng(11)
    taken = 0
    for _ in range(12):
        cut = _cutout(rng.normal(0.0, 1.0, (64, 64)), None)
        m = SepMasker()(cut)
        if m.detection.central >= 0:           # a noise peak was taken for the central
            taken += 1
            assert m.columns["mask_central_snr"] < MIN_CENTRAL_SNR
            assert not np.any(m.mask[m.detection.segmap == m.detection.central + 1])
        assert m.flags & Flag.NO_CENTRAL_DETECTION
        assert SepInitializer()(cut, m.detection).flags & Flag.NO_CENTRAL_DETECTION
    assert taken >= 4
    yy, xx = np.mgrid[0:64, 0:64]
    galaxy = 4.0 * np.exp(-np.hypot(xx - 31.5, yy - 31.5) / 3.0)     # a faint galaxy
    cut = _cutout(galaxy + rng.normal(0.0, 1.0, (64, 64)), None)
    m = SepMasker()(cut)
    assert MIN_CENTRAL_SNR < m.columns["mask_central_snr"] < 40
    assert not m.flags & Flag.NO_CENTRAL_DETECTION
    assert not SepInitializer()(cut, m.detection).flags & Flag.NO_CENTRAL_DETECTION
