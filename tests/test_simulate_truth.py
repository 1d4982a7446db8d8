"""The simulator's truth matches what GalSim draws: flux, centre, orientation, axis ratio and
major-axis half-light radius in the catalog conventions, plus noise and segmentation."""

import dataclasses
import math

import numpy as np
import pytest

from galmoss_auto.data_scripts.contaminants import ContaminantConfig
from galmoss_auto.data_scripts.populations import sersic_profile, snap_n, N_MAX
from galmoss_auto.data_scripts.scene import draw_object
from galmoss_auto.data_scripts.simulate import SimConfig, simulate_one
from galmoss_auto.data_scripts.surveys import load_survey


def _survey(**pop):
    """SDSS r with a round PSF and compact late-type centrals (little flux beyond the cutout)."""
    s = load_survey("sdss")
    base = {**s.population, "mag_range": [16.0, 16.5], "size_r0": 1.0, "size_scatter": 0.05,
            "early_fraction": [0.0, 0.0]}
    return dataclasses.replace(s, psf_ellipticity=0.0, population={**base, **pop})


def _moments(img):
    """Flux, 1-based centroid (x, y) and second moments of a noiseless image."""
    rows, cols = np.indices(img.shape)
    x, y = cols + 1.0, rows + 1.0
    f = img.sum()
    xc, yc = (img * x).sum() / f, (img * y).sum() / f
    mxx = (img * (x - xc) ** 2).sum() / f
    myy = (img * (y - yc) ** 2).sum() / f
    mxy = (img * (x - xc) * (y - yc)).sum() / f
    return f, xc, yc, mxx, myy, mxy


def _pa_q(mxx, myy, mxy):
    """PA in degrees CCW from +y (GALFIT) and b/a from second moments."""
    theta = 0.5 * math.degrees(math.atan2(2 * mxy, mxx - myy))  # major axis from +x
    pa = (theta - 90.0 + 90.0) % 180.0 - 90.0
    lam = np.linalg.eigvalsh([[mxx, mxy], [mxy, myy]])
    return pa, math.sqrt(lam[0] / lam[1])


def _pa_diff(a, b):
    return abs((a - b + 90.0) % 180.0 - 90.0)


def test_central_flux_and_centre_match_truth():
    cfg = SimConfig(survey=_survey(), band="r", size=96, contaminants=False)
    for index in range(3):
        res = simulate_one(cfg, index, seed=7)
        t = res["truth"]
        f, xc, yc, *_ = _moments(res["noiseless"].astype(np.float64))
        expected = 10 ** (-0.4 * (t["sersic_mag"] - 22.5))
        assert f == pytest.approx(expected, rel=0.01)
        # 1-based FITS coordinates: array [0, 0] is pixel (1, 1)
        assert xc == pytest.approx(t["sersic_x"], abs=0.03)
        assert yc == pytest.approx(t["sersic_y"], abs=0.03)
        # near the centre but not exactly on it
        assert abs(t["sersic_x"] - 48.5) <= 4.5 and abs(t["sersic_y"] - 48.5) <= 4.5
        assert (t["sersic_x"], t["sersic_y"]) != (48.5, 48.5)


@pytest.mark.parametrize("pa,q", [(30.0, 0.4), (-70.0, 0.6), (90.0, 0.3)])
def test_profile_pa_q_and_major_axis_r_e(pa, q):
    """PA counted CCW from +y, q = b/a from moments, r_e along the major axis from an
    elliptical-aperture curve of growth (unconvolved, so the PSF does not round it)."""
    comp = {"x": 60.3, "y": 58.8, "mag": 15.0, "r_e": 8.0, "n": 1.0, "q": q, "pa": pa}
    stamp = draw_object(sersic_profile(comp, 1000.0), None, comp["x"], comp["y"], 121, full=True)
    img = stamp.array.astype(np.float64)
    f, xc, yc, mxx, myy, mxy = _moments(img)
    assert xc == pytest.approx(comp["x"], abs=0.02) and yc == pytest.approx(comp["y"], abs=0.02)
    mpa, mq = _pa_q(mxx, myy, mxy)
    assert _pa_diff(mpa, pa) < 1.0
    assert mq == pytest.approx(q, abs=0.02)
    rows, cols = np.indices(img.shape)
    dx, dy = cols + 1.0 - comp["x"], rows + 1.0 - comp["y"]
    t = math.radians(pa)
    major = -dx * math.sin(t) + dy * math.cos(t)  # unit vector of the major axis: (-sin pa, cos pa)
    minor = dx * math.cos(t) + dy * math.sin(t)
    a = np.sqrt(major ** 2 + (minor / q) ** 2)  # elliptical radius = semi-major axis
    order = np.argsort(a.ravel())
    growth = np.cumsum(img.ravel()[order])
    r_half = a.ravel()[order][np.searchsorted(growth, 0.5 * 1000.0)]
    assert r_half == pytest.approx(8.0, rel=0.04)


def test_noise_matches_sigma_map():
    cfg = SimConfig(survey=_survey(), band="r", size=128, contaminants=False)
    res = simulate_one(cfg, 3, seed=11)
    z = (res["image"].astype(np.float64) - res["noiseless"]) / res["sigma"]
    assert abs(z.mean()) < 0.03
    assert z.std() == pytest.approx(1.0, abs=0.03)
    # the sigma map contains the source's Poisson noise: larger on the galaxy than on the sky
    seg = res["segmentation"]
    assert res["sigma"][seg == 1].max() > 1.05 * res["truth"]["sky_sigma"]
    assert np.median(res["sigma"][seg == 0]) == pytest.approx(res["truth"]["sky_sigma"], rel=1e-3)


def test_segmentation_labels_central_stars_and_artifacts():
    cc = ContaminantConfig(galaxy={"fixed": 0}, star={"fixed": 3}, blend_prob=0.0, artifacts=True,
                           bright_star_prob=0.0, bad_column={"fixed": 1}, cosmic_ray={"fixed": 2})
    cfg = SimConfig(survey=_survey(), band="r", size=96, contaminant_config=cc)
    res = simulate_one(cfg, 0, seed=5)
    seg, model, objs = res["segmentation"], res["noiseless"], res["objects"]
    t = res["truth"]
    threshold = cfg.seg_threshold * t["sky_sigma"]
    assert seg[int(round(t["sersic_y"])) - 1, int(round(t["sersic_x"])) - 1] == 1
    kinds = [o["kind"] for o in objs]
    assert kinds == ["central", "star", "star", "star", "bad_column", "cosmic_ray", "cosmic_ray"]
    assert [o["label"] for o in objs] == list(range(1, 8))
    astro = (seg >= 1) & (seg <= 4)
    assert np.all(model[astro] > threshold)  # a footprint lies above the stated threshold
    for o in objs:
        assert o["npix"] == np.count_nonzero(seg == o["label"])
    col = [o for o in objs if o["kind"] == "bad_column"][0]
    assert np.count_nonzero(seg == col["label"]) >= 1
    c = int(col["x"]) - 1
    assert np.all(seg[int(96 - col["npix"]):, c] == col["label"])


def test_bulge_disk_truth_is_consistent():
    cfg = SimConfig(survey=_survey(), band="r", size=96, population="bulge_disk", contaminants=False)
    res = simulate_one(cfg, 2, seed=3)
    t = res["truth"]
    fb, fd = 10 ** (-0.4 * (t["bulge_mag"] - 22.5)), 10 ** (-0.4 * (t["disk_mag"] - 22.5))
    assert t["bt"] == pytest.approx(fb / (fb + fd), rel=1e-9)
    assert t["total_mag"] == pytest.approx(22.5 - 2.5 * math.log10(fb + fd), abs=1e-9)
    assert t["disk_n"] == 1.0 and t["bulge_r_e"] < t["disk_r_e"]
    assert math.isnan(t["sersic_mag"]) if "sersic_mag" in t else True
    assert res["noiseless"].sum() == pytest.approx(fb + fd, rel=0.015)


def test_substructure_keeps_the_components_flux():
    cfg = SimConfig(survey=_survey(size_r0=2.5), band="r", size=128, contaminants=False, substructure=True)
    seen = set()
    for index in range(6):
        res = simulate_one(cfg, index, seed=21)
        t = res["truth"]
        if t["substructure"]:
            seen.update(t["substructure"].split("+"))
            assert 0 < t["substructure_frac"] < 0.7
            assert res["noiseless"].sum() == pytest.approx(10 ** (-0.4 * (t["sersic_mag"] - 22.5)), rel=0.03)
    assert seen, "no substructure drawn in 6 disk galaxies"


def test_sersic_index_grid():
    assert snap_n(1.0) == 1.0 and snap_n(4.0) == pytest.approx(4.0) and snap_n(0.1) == 0.5
    assert snap_n(10.0) == pytest.approx(N_MAX) and N_MAX < 6.2  # GalSim's limit
    grid = {snap_n(v) for v in np.linspace(0.5, 6, 2000)}
    assert len(grid) <= 100  # fits GalSim's per-process Sersic cache
