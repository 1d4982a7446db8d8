"""Parameter recovery, solver agreement, error calibration, multi-component models, bad input."""

import math

import numpy as np
import pytest
import torch

galsim = pytest.importorskip("galsim")

from galmoss_auto.fitting import (AdamSettings, Cutout, CutoutError, Exponential, FlatSky, Flag, Model, PointSource, Sersic,
                                  Tie, fit, model_images, read_cutout)

N = 48
PSF_G = galsim.Moffat(beta=3.5, fwhm=2.8)
PSF = PSF_G.drawImage(nx=21, ny=21, scale=1.0, method="auto").array
TRUTH = dict(sersic_x=24.7, sersic_y=24.2, sersic_mag=15.0, sersic_r_e=4.0, sersic_n=2.5, sersic_q=0.6,
             sersic_pa=35.0)
ZP = 25.0


def draw(t, n=N, psf=True):
    gal = galsim.Sersic(n=t["sersic_n"], half_light_radius=t["sersic_r_e"] * math.sqrt(t["sersic_q"]),
                        flux=10 ** (-0.4 * (t["sersic_mag"] - ZP))).shear(
        q=t["sersic_q"], beta=(t["sersic_pa"] + 90) * galsim.degrees)
    obj = galsim.Convolve(gal, PSF_G) if psf else gal
    off = (t["sersic_x"] - (n + 1) / 2, t["sersic_y"] - (n + 1) / 2)
    return obj.drawImage(nx=n, ny=n, scale=1.0, offset=off, method="auto").array


def noisy(img, rng, sky=50.0):
    sigma = np.sqrt(sky + np.clip(img, 0, None))
    return img + rng.normal(size=img.shape) * sigma, sigma


def start(t, scale=1.0):
    s = dict(t)
    s.update(sersic_x=t["sersic_x"] + 0.8 * scale, sersic_y=t["sersic_y"] - 0.6 * scale,
             sersic_mag=t["sersic_mag"] + 0.3 * scale, sersic_r_e=t["sersic_r_e"] * (1 + 0.3 * scale),
             sersic_n=1.0 + 0 * scale, sersic_q=min(0.9, t["sersic_q"] + 0.2), sersic_pa=t["sersic_pa"] - 15)
    return s


def as_init(rows):
    return {k: np.array([r[k] for r in rows]) for k in rows[0]}


@pytest.fixture(scope="module")
def clean():
    return draw(TRUTH)


def test_recovers_noiseless_galaxy_exactly(clean):
    cut = Cutout("a", clean, sigma=np.full(clean.shape, 1.0), psf=PSF, zeropoint=ZP)
    cat = fit([cut], as_init([start(TRUTH)]), errors="none")
    row = cat[0]
    assert row["flags"] == 0
    for k, tol in dict(sersic_x=2e-3, sersic_y=2e-3, sersic_mag=1e-3, sersic_n=3e-3, sersic_q=1e-3).items():
        assert abs(row[k] - TRUTH[k]) < tol * (1 if k in ("sersic_x", "sersic_y", "sersic_mag", "sersic_q") else TRUTH[k]), k
    assert abs(row["sersic_r_e"] / TRUTH["sersic_r_e"] - 1) < 2e-3
    assert abs(row["sersic_pa"] - TRUTH["sersic_pa"]) < 0.1


def test_lm_and_adam_agree(clean):
    rng = np.random.default_rng(3)
    data, sigma = noisy(clean, rng)
    cut = Cutout("a", data, sigma=sigma, psf=PSF, zeropoint=ZP)
    lm = fit([cut], as_init([start(TRUTH)]), errors="covariance")[0]
    adam = fit([cut], as_init([start(TRUTH)]), method="adam", errors="none",
               adam_settings=AdamSettings(max_iter=600, lr=0.05, decay=0.993))[0]
    for k in ("sersic_mag", "sersic_r_e", "sersic_n", "sersic_q", "sersic_pa"):
        assert abs(lm[k] - adam[k]) < 0.3 * lm[f"{k}_err"], k
    assert adam["chi2_nu"] >= lm["chi2_nu"] - 1e-6


def test_error_calibration_pulls(clean):
    """200 noise realisations of one galaxy: pull std within [0.85, 1.15] (issue 2's bar)."""
    rng = np.random.default_rng(7)
    cuts = []
    for i in range(200):
        data, sigma = noisy(clean, rng)
        cuts.append(Cutout(str(i), data, sigma=sigma, psf=PSF, zeropoint=ZP))
    cat = fit(cuts, as_init([start(TRUTH, 0.3)] * 200), errors="covariance", batch_size=200)
    assert np.all(cat["flags"] == 0)
    for k in ("sersic_mag", "sersic_r_e", "sersic_n", "sersic_q", "sersic_pa", "sersic_x"):
        pull = (np.asarray(cat[k]) - TRUTH[k]) / np.asarray(cat[f"{k}_err"])
        assert 0.85 <= pull.std() <= 1.15, (k, pull.std())
        assert abs(np.mean(pull)) < 0.3, (k, np.mean(pull))


def test_bootstrap_errors_match_covariance(clean):
    rng = np.random.default_rng(11)
    cuts = [Cutout(str(i), *noisy(clean, rng), psf=PSF, zeropoint=ZP) for i in range(2)]
    cov = fit(cuts, as_init([TRUTH] * 2), errors="covariance")
    boot = fit(cuts, as_init([TRUTH] * 2), errors="bootstrap", n_bootstrap=40, seed=1)
    for k in ("sersic_mag", "sersic_r_e", "sersic_n"):
        ratio = np.asarray(boot[f"{k}_err"]) / np.asarray(cov[f"{k}_err"])
        assert np.all((ratio > 0.6) & (ratio < 1.6)), (k, ratio)
    # replicates are independent per galaxy: two galaxies' bootstrap errors are not identical
    assert boot["sersic_n_err"][0] != boot["sersic_n_err"][1]


def test_mixed_sizes_no_psf_and_order():
    """Cutouts of different sizes and with/without PSF in one call; rows come back in input order."""
    rng = np.random.default_rng(5)
    cuts, inits = [], []
    for i, (n, psf) in enumerate([(40, True), (56, False), (32, True), (48, False)]):
        t = dict(TRUTH, sersic_x=(n + 1) / 2 + 0.3, sersic_y=(n + 1) / 2 - 0.2)
        img = draw(t, n, psf)
        cuts.append(Cutout(f"g{i}", *noisy(img, rng, sky=5.0), psf=PSF if psf else None, zeropoint=ZP))
        inits.append(start(t, 0.5))
    cat = fit(cuts, as_init(inits))
    assert list(cat["id"]) == ["g0", "g1", "g2", "g3"]
    assert np.all(np.abs(cat["sersic_n"] - TRUTH["sersic_n"]) < 5 * cat["sersic_n_err"] + 0.05)


def test_bulge_disk_with_ties_point_source_and_sky():
    """Sersic bulge + exponential disk (shared centre) + point source + sky, recovered."""
    rng = np.random.default_rng(2)
    n = 64
    c = (n - 1) / 2
    bulge = galsim.Sersic(n=4.0, half_light_radius=2.0 * math.sqrt(0.8), flux=3000.0).shear(q=0.8, beta=100 * galsim.degrees)
    disk = galsim.Exponential(scale_radius=6.0 * math.sqrt(0.5), flux=8000.0).shear(q=0.5, beta=100 * galsim.degrees)
    agn = galsim.DeltaFunction(flux=1500.0)
    img = galsim.Convolve(bulge + disk + agn, PSF_G).drawImage(nx=n, ny=n, scale=1.0, method="auto").array + 10.0
    sigma = np.sqrt(10.0 + np.clip(img, 0, None)) * 0.2
    data = img + rng.normal(size=img.shape) * sigma
    model = Model([Sersic("bulge"), Exponential("disk"), PointSource("agn"), FlatSky("sky")],
                  ties=[Tie("disk.x", "bulge.x"), Tie("disk.y", "bulge.y"), Tie("agn.x", "bulge.x"),
                        Tie("agn.y", "bulge.y"), Tie("disk.pa", "bulge.pa")],
                  fixed={"bulge.n": 4.0})
    init = {"bulge_x": [c + 1.5], "bulge_y": [c + 1.3], "bulge_mag": [-2.5 * math.log10(2000) + ZP],
            "bulge_r_e": [3.0], "bulge_q": [0.9], "bulge_pa": [0.0], "disk_mag": [-2.5 * math.log10(6000) + ZP],
            "disk_r_s": [4.0], "disk_q": [0.7], "agn_mag": [-2.5 * math.log10(1000) + ZP], "sky_sky": [0.0]}
    cat = fit([Cutout("bd", data, sigma=sigma, psf=PSF, zeropoint=ZP)], init, model=model)
    row = cat[0]
    assert row["flags"] & ~int(Flag.AT_BOUND) == 0
    assert row["disk_x"] == row["bulge_x"] and row["agn_y"] == row["bulge_y"]
    assert row["bulge_n"] == 4.0 and row["bulge_n_err"] == 0.0
    truth = dict(bulge_x=c + 1, disk_r_s=6.0, disk_q=0.5, bulge_r_e=2.0, bulge_pa=10.0,
                 agn_mag=ZP - 2.5 * math.log10(1500), sky_sky=10.0, bulge_mag=ZP - 2.5 * math.log10(3000),
                 disk_mag=ZP - 2.5 * math.log10(8000))
    for k, v in truth.items():
        assert abs(row[k] - v) < 5 * row[f"{k}_err"], (k, row[k], v, row[f"{k}_err"])
    images = model_images([Cutout("bd", data, sigma=sigma, psf=PSF, zeropoint=ZP)], cat, model)[0]
    total = images["bulge"] + images["disk"] + images["agn"] + images["sky"]
    assert np.allclose(total, images["model"], atol=1e-3 * images["model"].max())


def test_offset_and_ratio_ties_and_bounds_flag():
    rng = np.random.default_rng(8)
    img = draw(TRUTH)
    cut = Cutout("t", *noisy(img, rng), psf=PSF, zeropoint=ZP)
    # a bound that excludes the truth: the fit ends on it and is flagged
    model = Model([Sersic("sersic")], bounds={"sersic.n": (0.5, 1.5)})
    row = fit([cut], as_init([start(TRUTH)]), model=model)[0]
    assert row["flags"] & Flag.AT_BOUND
    assert abs(row["sersic_n"] - 1.5) < 1e-6
    two = Model([Sersic("a"), Sersic("b")],
                ties=[Tie("b.x", "a.x", offset=3.0), Tie("b.mag", "a.mag", offset=1.0),
                      Tie("b.r_e", "a.r_e", ratio=2.0), Tie("b.n", "a.n", ratio=0.5)])
    init = {f"{c}_{k}": [v] for c in "ab" for k, v in
            dict(x=24.0, y=24.0, mag=16.0, r_e=3.0, n=2.0, q=0.7, pa=10.0).items()}
    row = fit([cut], init, model=two, errors="none")[0]
    assert abs(row["b_x"] - row["a_x"] - 3.0) < 1e-9
    assert abs(row["b_mag"] - row["a_mag"] - 1.0) < 1e-9
    assert abs(row["b_r_e"] / row["a_r_e"] - 2.0) < 1e-9
    assert abs(row["b_n"] / row["a_n"] - 0.5) < 1e-9


def test_catalog_conventions_and_q_flip():
    """A start with q > 1 and PA off by 90: reported with q <= 1, r_e along the major axis."""
    rng = np.random.default_rng(4)
    cut = Cutout("f", *noisy(draw(TRUTH), rng, sky=5.0), psf=PSF, zeropoint=ZP, pixel_scale=0.4)
    s = start(TRUTH)
    cat = fit([cut], as_init([s]))
    row = cat[0]
    assert 0 < row["sersic_q"] <= 1 and -90 < row["sersic_pa"] <= 90
    assert abs(row["sersic_pa"] - TRUTH["sersic_pa"]) < 2
    assert abs(row["sersic_r_e_arcsec"] - 0.4 * row["sersic_r_e"]) < 1e-9
    assert str(cat["sersic_pa"].unit) == "deg" and str(cat["sersic_r_e"].unit) == "pix"
    assert cat.colnames[:3] == ["id", "sersic_x", "sersic_x_err"]
    assert cat.colnames[-4:] == ["chi2_nu", "n_iter", "flags", "n_bad_pixels"]


def test_bad_pixels_are_masked_and_counted(clean):
    rng = np.random.default_rng(9)
    data, sigma = noisy(clean, rng)
    data[3, 4] = np.nan
    data[10, :5] = np.inf
    sigma[20, 20] = 0.0
    cut = Cutout("nan", data, sigma=sigma, psf=PSF, zeropoint=ZP)
    assert cut.n_bad_pixels == 7 and cut.mask.sum() == 7
    row = fit([cut], as_init([start(TRUTH)]))[0]
    assert row["n_bad_pixels"] == 7 and row["flags"] & Flag.AUTO_MASKED_PIXELS
    assert np.isfinite(row["sersic_n"]) and abs(row["sersic_n"] - TRUTH["sersic_n"]) < 0.3


def test_bad_input_errors_name_the_file(tmp_path):
    from astropy.io import fits

    good = tmp_path / "good.fits"
    fits.writeto(good, np.ones((20, 20), np.float32))
    with pytest.raises(CutoutError, match="missing.fits.*not found"):
        read_cutout(tmp_path / "missing.fits")
    corrupt = tmp_path / "corrupt.fits"
    corrupt.write_bytes(b"SIMPLE  =                    T" + b"\x00" * 100)
    with pytest.raises(CutoutError, match="corrupt.fits"):
        read_cutout(corrupt)
    cube = tmp_path / "cube.fits"
    fits.writeto(cube, np.ones((3, 4, 5), np.float32))
    with pytest.raises(CutoutError, match="cube.fits.*2-D"):
        read_cutout(cube)
    nan = tmp_path / "nan.fits"
    fits.writeto(nan, np.full((20, 20), np.nan, np.float32))
    with pytest.raises(CutoutError, match="nan.fits.*no valid pixel"):
        read_cutout(nan)
    zero_sigma = tmp_path / "zero_sigma.fits"
    fits.writeto(zero_sigma, np.zeros((20, 20), np.float32))
    with pytest.raises(CutoutError, match="good.fits.*no valid pixel"):
        read_cutout(good, sigma=zero_sigma)
    psf0 = tmp_path / "psf0.fits"
    fits.writeto(psf0, np.zeros((5, 5), np.float32))
    with pytest.raises(CutoutError, match="psf0.fits.*sums to 0"):
        read_cutout(good, psf=psf0)
    wrong = tmp_path / "wrong.fits"
    fits.writeto(wrong, np.ones((10, 20), np.float32))
    with pytest.raises(CutoutError, match="wrong.fits.*shape"):
        read_cutout(good, sigma=wrong)
    # a PSF larger than the image is legal (no error): it is handled by the renderer
    big = tmp_path / "bigpsf.fits"
    fits.writeto(big, np.ones((31, 31), np.float32))
    assert read_cutout(good, psf=big).psf.shape == (31, 31)


def test_one_failing_galaxy_does_not_stop_the_others(clean, monkeypatch):
    """A galaxy whose fit raises gets FIT_FAILED; the rest of its batch is fitted."""
    from galmoss_auto.fitting import api

    rng = np.random.default_rng(1)
    cuts = [Cutout(str(i), *noisy(clean, rng), psf=PSF, zeropoint=ZP) for i in range(4)]
    real = api._fit_batch

    def flaky(cutouts, cols, opts):
        if any(c.id == "2" for c in cutouts):
            raise torch.linalg.LinAlgError("simulated failure")
        return real(cutouts, cols, opts)

    monkeypatch.setattr(api, "_fit_batch", flaky)
    cat = fit(cuts, as_init([start(TRUTH)] * 4), errors="none")
    assert list(cat["id"]) == ["0", "1", "2", "3"]
    assert cat["flags"][2] & Flag.FIT_FAILED and np.isnan(cat["sersic_n"][2])
    assert all(cat["flags"][i] == 0 for i in (0, 1, 3))


@pytest.mark.gpu
def test_gpu_matches_cpu(clean):
    rng = np.random.default_rng(6)
    cut = Cutout("g", *noisy(clean, rng), psf=PSF, zeropoint=ZP)
    a = fit([cut], as_init([start(TRUTH)]), device="cpu")[0]
    b = fit([cut], as_init([start(TRUTH)]), device="cuda")[0]
    for k in ("sersic_mag", "sersic_r_e", "sersic_n", "sersic_q", "sersic_pa"):
        assert abs(a[k] - b[k]) < 0.05 * a[f"{k}_err"], k


def test_read_cutout_accepts_arrays():
    image = np.ones((12, 12))
    cut = read_cutout(image, id="arr", sigma=np.full((12, 12), 2.0), mask=np.zeros((12, 12)))
    assert cut.id == "arr" and np.all(cut.sigma == 2.0)
    cut = read_cutout(image, id="w", weight=np.full((12, 12), 4.0))
    assert np.allclose(cut.sigma, 0.5)
    with pytest.raises(CutoutError, match="sigma shape"):
        read_cutout(image, id="bad", variance=np.ones((3, 3)))


def test_centre_windows_hold_a_component_near_its_start():
    import torch
    from galmoss_auto.fitting.model import Model
    from galmoss_auto.fitting.profiles import Sersic
    model = Model([Sersic("sersic"), Sersic("nb1")], windows={"nb1": 2.0})
    F = len(model.free_names)
    free0 = torch.zeros(2, F, dtype=torch.float64)
    ix, iy = model.free_names.index("nb1.x"), model.free_names.index("nb1.y")
    free0[:, ix], free0[:, iy] = torch.tensor([10.0, 50.0]), torch.tensor([20.0, 0.25])
    lo = torch.full((2, F), -0.5, dtype=torch.float64)
    hi = torch.full((2, F), 63.5, dtype=torch.float64)
    lo2, hi2 = model.window_bounds(free0, lo, hi)
    assert lo2[:, ix].tolist() == [8.0, 48.0] and hi2[:, ix].tolist() == [12.0, 52.0]
    assert lo2[:, iy].tolist() == [18.0, -0.5] and hi2[:, iy].tolist() == [22.0, 2.25]  # the cutout still bounds it
    sx = model.free_names.index("sersic.x")
    assert torch.equal(lo2[:, sx], lo[:, sx]) and torch.equal(hi2[:, sx], hi[:, sx])   # no window: unchanged
    with pytest.raises(KeyError, match="window"):
        Model([Sersic("sersic")], windows={"nb9": 2.0})
    with pytest.raises(ValueError, match="half-width"):
        Model([Sersic("sersic")], windows={"sersic": 0.0})
    # auxiliary (neighbour) components: which free parameters set NEIGHBOUR_AT_BOUND
    aux = Model([Sersic("sersic"), Sersic("nb1")], auxiliary=["nb1"]).auxiliary_free
    assert aux.tolist() == [n.startswith("nb1.") for n in model.free_names]
    with pytest.raises(KeyError, match="auxiliary"):
        Model([Sersic("sersic")], auxiliary=["nb1"])


def test_growth_limits_hold_a_components_lengths_below_a_factor_of_their_start():
    import math
    import torch
    from galmoss_auto.fitting.model import Model, with_sky
    from galmoss_auto.fitting.profiles import Sersic
    model = Model([Sersic("sersic"), Sersic("nb1")], windows={"nb1": 2.0}, growth={"nb1": 3.0})
    F = len(model.free_names)
    free0 = torch.zeros(2, F, dtype=torch.float64)
    ir, ix = model.free_names.index("nb1.r_e"), model.free_names.index("nb1.x")
    free0[:, ir] = torch.log(torch.tensor([2.0, 30.0], dtype=torch.float64))   # lengths are logs inside
    free0[:, ix] = 10.0
    lo = torch.full((2, F), -10.0, dtype=torch.float64)
    hi = torch.full((2, F), math.log(50.0), dtype=torch.float64)
    hi[:, ix] = 63.5
    iq = model.free_names.index("nb1.q")
    free0[:, iq] = math.log(0.5)
    lo2, hi2 = model.window_bounds(free0, lo, hi)
    assert torch.allclose(hi2[:, iq], torch.full((2,), math.log(3.0), dtype=torch.float64))  # axes swap up to 3
    assert torch.allclose(hi2[:, ir].exp(), torch.tensor([6.0, 50.0], dtype=torch.float64))  # 3 x start, or the old bound
    assert torch.equal(lo2[:, ir], lo[:, ir])                 # shrinking stays free
    assert hi2[:, ix].tolist() == [12.0, 12.0]                # the window still holds
    others = [j for j, n in enumerate(model.free_names) if not n.startswith("nb1.") or n == "nb1.n"]
    assert torch.equal(hi2[:, others], hi[:, others])
    assert with_sky(model, "flat").growth == {"nb1": 3.0}     # kept when a sky is added
    with pytest.raises(KeyError, match="growth"):
        Model([Sersic("sersic")], growth={"nb9": 3.0})
    with pytest.raises(ValueError, match="factor > 1"):
        Model([Sersic("sersic")], growth={"sersic": 1.0})
