"""The benchmark's convention conversions (benchmarks/conventions.py, metrics.py) and, where the
peers are installed, their adapters' geometry: fast checks with no fitting."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import quad

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of scripts, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import conventions as cv  # noqa: E402
from benchmarks.metrics import deltas, paired_scatter_difference, robust_scatter, summarise  # noqa: E402


def test_wrap_pa_range_and_delta():
    pa = cv.wrap_pa([-90.0, 90.0, 270.0, -180.0, 135.0, -91.0])
    assert np.allclose(pa, [90.0, 90.0, 90.0, 0.0, -45.0, 89.0])
    assert np.all((pa > -90) & (pa <= 90))
    # 89 and -89 deg are 2 deg apart as axes, not 178.
    assert np.isclose(cv.delta_pa(89.0, -89.0), -2.0)


def test_galsim_angle_and_radius_round_trip():
    pa = np.array([-80.0, -10.0, 0.0, 45.0, 90.0])
    assert np.allclose(cv.pa_from_galsim_beta(cv.galsim_beta_from_pa(pa)), cv.wrap_pa(pa))
    assert np.isclose(cv.pa_from_galsim_beta(0.0), 90.0)  # major axis along +x
    assert np.isclose(cv.r_e_from_galsim_hlr(cv.galsim_hlr_from_r_e(8.0, 0.36), 0.36), 8.0)
    assert np.isclose(cv.galsim_hlr_from_r_e(8.0, 0.25), 4.0)


def test_centres_and_angles_of_the_peers():
    assert cv.galmoss_center(1.0, 1.0) == (0.5, 0.5)
    assert np.allclose(cv.center_from_galmoss(*cv.galmoss_center(12.3, 7.9)), (12.3, 7.9))
    assert cv.astrophot_center(1.0, 1.0) == (0.0, 0.0)
    assert np.isclose(cv.astrophot_pa(-30.0), np.radians(150.0))
    assert np.isclose(cv.pa_from_astrophot(np.radians(150.0)), -30.0)
    assert np.isclose(cv.q_from_imfit_ell(cv.imfit_ell(0.3)), 0.3)


@pytest.mark.parametrize("n", [0.5, 1.0, 4.0])
def test_sersic_total_flux_matches_integral(n):
    r_e, q, i_e = 5.0, 0.6, 2.0
    b = cv.sersic_bn(n)
    # Flux of an elliptical profile: q * integral of 2 pi r I(r) dr along the major axis.
    integral, _ = quad(lambda r: 2 * np.pi * r * i_e * np.exp(-b * ((r / r_e) ** (1 / n) - 1)),
                       0, np.inf, limit=200)
    assert np.isclose(cv.sersic_total_flux(i_e, r_e, n, q), q * integral, rtol=1e-6)
    assert np.isclose(cv.sersic_ie(q * integral, r_e, n, q), i_e, rtol=1e-6)


def test_sersic_bn_half_light_and_bound():
    from scipy.special import gammainc
    assert np.isclose(gammainc(2 * 2.5, cv.sersic_bn(2.5)), 0.5)
    with pytest.raises(ValueError, match="lower bound 0"):
        cv.sersic_bn(0.0)


def test_ie_and_pa_against_galsim_profile():
    """GalSim's sheared Sérsic has surface brightness sersic_ie() at r_e along the major axis
    pointing at pa (CCW from +y), and the profile's value at r_e / q across it."""
    galsim = pytest.importorskip("galsim")
    n, r_e, q, pa, flux = 1.7, 6.0, 0.5, 30.0, 1000.0
    gal = galsim.Sersic(n=n, half_light_radius=float(cv.galsim_hlr_from_r_e(r_e, q)), flux=flux)
    gal = gal.shear(q=q, beta=float(cv.galsim_beta_from_pa(pa)) * galsim.degrees)
    t = np.radians(pa)
    major = galsim.PositionD(-r_e * np.sin(t), r_e * np.cos(t))  # CCW from +y
    minor = galsim.PositionD(r_e * np.cos(t), r_e * np.sin(t))
    assert np.isclose(gal.xValue(major), cv.sersic_ie(flux, r_e, n, q), rtol=1e-4)
    # Across it, r_e from the centre is r_e / q in elliptical radius.
    i_minor = cv.sersic_ie(flux, r_e, n, q) * np.exp(-cv.sersic_bn(n) * ((1 / q) ** (1 / n) - 1))
    assert np.isclose(gal.xValue(minor), i_minor, rtol=1e-4)


def test_metrics_wrap_and_catastrophes():
    from astropy.table import Table
    truth = Table({"id": ["a", "b", "c"], "sersic_mag": [15.0, 16.0, 17.0],
                   "sersic_r_e": [4.0, 5.0, 6.0], "sersic_n": [1.0, 2.0, 4.0],
                   "sersic_q": [0.5, 0.9, 0.3], "sersic_pa": [89.0, 0.0, -45.0]})
    fit = Table({"id": ["a", "b", "c"], "sersic_mag": [15.1, 16.0, np.nan],
                 "sersic_r_e": [4.0, 10.0, 6.0], "sersic_n": [1.1, 2.0, 4.0],
                 "sersic_q": [0.5, 0.9, 0.3], "sersic_pa": [-89.0, 40.0, -45.0],
                 "converged": [True, False, True]})
    d = deltas(fit, truth)
    assert np.isclose(d["dpa"][0], 2.0) and np.isnan(d["dpa"][1])  # q_true 0.9 > 0.8: no PA
    assert np.isclose(d["dn_n"][0], 0.1)
    s = summarise(fit, truth, wall_s=2.0)
    # b: |Δlog r_e| = 0.30103 > 0.3; c: no finite magnitude.
    assert s["catastrophic_fraction"] == pytest.approx(2 / 3)
    assert s["not_converged"] == 1 and s["failed"] == 1 and s["galaxies_per_s"] == 1.5


def test_robust_scatter_of_gaussian():
    x = np.random.default_rng(3).normal(0.0, 2.0, 20000)
    assert robust_scatter(x) == pytest.approx(2.0, rel=0.03)
    assert np.isnan(robust_scatter([np.nan]))


def test_paired_scatter_difference():
    rng = np.random.default_rng(4)
    noise = rng.normal(size=300)
    # the same galaxies, a tool with half the scatter: significantly better (interval below 0)
    diff, low, high = paired_scatter_difference(0.5 * noise, noise)
    assert diff < 0 and high < 0
    # two tools that differ by a little per-galaxy jitter: not significantly different
    other = noise + rng.normal(size=300) * 0.05
    diff, low, high = paired_scatter_difference(noise, other)
    assert low < 0 < high and low < diff < high
    # NaN pairs are dropped, too few pairs give NaN
    a = np.r_[noise[:50], np.nan]
    assert np.isfinite(paired_scatter_difference(a, np.r_[noise[:50], 1.0])[0])
    assert np.isnan(paired_scatter_difference([1.0, np.nan], [1.0, 2.0])[0])


def _moments(img):
    """(x, y) 1-based centroid, pa (deg CCW from +y) and q from second moments."""
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]].astype(float)
    f = img.sum()
    cx, cy = (img * xx).sum() / f, (img * yy).sum() / f
    mxx = (img * (xx - cx) ** 2).sum() / f
    myy = (img * (yy - cy) ** 2).sum() / f
    mxy = (img * (xx - cx) * (yy - cy)).sum() / f
    theta = 0.5 * np.degrees(np.arctan2(2 * mxy, mxx - myy))  # CCW from +x
    lam = np.linalg.eigvalsh([[mxx, mxy], [mxy, myy]])
    return cx + 1, cy + 1, float(cv.wrap_pa(theta - 90.0)), float(np.sqrt(lam[0] / lam[1]))


TRUE = dict(x=40.3, y=45.8, pa=30.0, q=0.5, r_e=5.0, n=1.0, mag=15.0)


def _check_geometry(img, flux):
    x, y, pa, q = _moments(img)
    assert abs(x - TRUE["x"]) < 0.03 and abs(y - TRUE["y"]) < 0.03
    assert abs(cv.delta_pa(pa, TRUE["pa"])) < 0.5
    assert abs(q - TRUE["q"]) < 0.01
    assert img.sum() == pytest.approx(flux, rel=0.01)


def test_pyimfit_adapter_geometry():
    pyimfit = pytest.importorskip("pyimfit")
    from benchmarks.peers.pyimfit_peer import _model
    g = {k: np.array([v]) for k, v in TRUE.items()}
    fitter = pyimfit.Imfit(_model(pyimfit, g, 0, 96, 25.0))
    img = fitter.getModelImage(shape=(96, 96))
    _check_geometry(img, cv.flux_from_mag(TRUE["mag"], 25.0))


def test_astrophot_adapter_geometry():
    ap = pytest.importorskip("astrophot")
    from galmoss_auto.fitting.cutout import Cutout
    from benchmarks.peers.astrophot_peer import _build
    psf = np.zeros((3, 3))
    psf[1, 1] = 1.0  # a delta PSF: the adapter always passes one
    c = Cutout(id="t", image=np.zeros((96, 96)), sigma=np.ones((96, 96)), psf=psf,
               zeropoint=25.0)
    g = {k: np.array([v]) for k, v in TRUE.items()}
    model = _build(ap, c, g, 0)
    img = model().data.detach().cpu().numpy()  # .data is (rows, columns)
    _check_geometry(img, cv.flux_from_mag(TRUE["mag"], 25.0))


def test_split_init_keeps_total_flux():
    from astropy.table import Table
    from benchmarks.scaling import split_init
    init = Table({"id": ["a"], "sersic_x": [10.0], "sersic_y": [11.0], "sersic_mag": [15.0],
                  "sersic_r_e": [3.0], "sersic_n": [2.5], "sersic_q": [0.7], "sersic_pa": [20.0]})
    t = split_init(init, 3)
    flux = sum(10 ** (-0.4 * t[f"{c}_mag"][0]) for c in ("sersic", "disk", "bar"))
    assert flux == pytest.approx(10 ** (-0.4 * 15.0))
    assert list(t["disk_r_e"]) == [4.5] and list(t["bar_n"]) == [0.5]
    assert list(t["bar_q"]) == [0.35] and list(t["disk_q"]) == [0.7]
    one = split_init(init, 1)  # one component: the guess unchanged
    assert all(one[c][0] == init[c][0] for c in init.colnames)
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        split_init(init, 4)


def test_multi_component_simulation_splits_flux():
    pytest.importorskip("galsim")
    from benchmarks.dataset import COMPONENT_NAMES, SimConfig, simulate
    one = simulate(SimConfig(n_galaxies=2, size=64, seed=3, r_e_range=(2.0, 3.0)))
    three = simulate(SimConfig(n_galaxies=2, size=64, seed=3, r_e_range=(2.0, 3.0), components=3))
    # the first component's draws are shared; the total magnitude is split 30/50/20
    assert np.allclose(one.truth["sersic_r_e"], three.truth["sersic_r_e"])
    flux = sum(10 ** (-0.4 * three.truth[f"{c}_mag"].value) for c in COMPONENT_NAMES)
    assert np.allclose(flux, 10 ** (-0.4 * one.truth["sersic_mag"].value))
    assert np.allclose(three.truth["disk_n"], 1.0) and np.allclose(three.truth["bar_n"], 0.5)
    assert np.all(np.abs(three.truth["bar_pa"].value) <= 90.0)
    # the image holds all components: about the drawn total (noise, light beyond the edge)
    for c3, mag in zip(three.cutouts, one.truth["sersic_mag"].value):
        total = 10 ** (-0.4 * (mag - 25.0))
        assert c3.image.sum() == pytest.approx(total, rel=0.25)
    with pytest.raises(ValueError, match="components"):
        SimConfig(components=4)
