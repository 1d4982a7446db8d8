"""Issue 9, items 2, 6 (saturation) and 7 (one reader): every input the fit depends on is found
or refused, the catalog says where it came from, and ``fit`` and ``run`` treat the same bad
cutout the same."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galmoss_auto.fitting.cutout import CutoutError, read_record
from galmoss_auto.fitting.flags import Flag


def _galaxy(n=40, amp=50.0, seed=0, sky=0.0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    r2 = (xx - (n - 1) / 2) ** 2 + (yy - (n - 1) / 2) ** 2
    return (amp * np.exp(-r2 / 18.0) + sky + rng.normal(0, 0.5, (n, n))).astype(np.float32)


def _psf():
    yy, xx = np.mgrid[0:9, 0:9]
    return np.exp(-((xx - 4) ** 2 + (yy - 4) ** 2) / 3.0)


def _run(inp, out, **kw):
    from galmoss_auto.pipelines.config import RunConfig
    from galmoss_auto.pipelines.run import run
    import io
    opts = dict(workers=0, progress=False, mask="sep", init="sep", errors="none") | kw
    run(RunConfig(input=str(inp), out=str(out), **opts), stream=io.StringIO())
    return {str(r["id"]): r for r in Table.read(out / "catalog.fits", mask_invalid=False)}


def test_extensions_and_header_come_first(tmp_path):
    """A directory of multi-extension cutouts (image + SIGMA + PSF + MASK, MAGZP, PIXSCALE,
    SATURATE in the header): all used, and the catalog says so; --zeropoint is only a default."""
    d = tmp_path / "cutouts"
    d.mkdir()
    img = _galaxy()
    img[5, 5] = 1e5                                     # a saturated pixel
    primary = fits.PrimaryHDU(img)
    primary.header.update(MAGZP=27.0, PIXSCALE=0.4, SATURATE=1000.0)
    mask = np.zeros(img.shape, np.uint8)
    mask[0, :4] = 1
    fits.HDUList([primary, fits.ImageHDU(np.full(img.shape, 0.5, np.float32), name="SIGMA"),
                  fits.ImageHDU(_psf(), name="PSF"), fits.ImageHDU(mask, name="MASK")]
                 ).writeto(d / "g1.fits")
    fits.PrimaryHDU(_galaxy(seed=1)).writeto(d / "g2.fits")     # nothing but the image
    cat = _run(d, tmp_path / "out", zeropoint=25.0)
    g1, g2 = cat["g1"], cat["g2"]
    assert (g1["psf_source"], g1["sigma_source"], g1["zeropoint_source"]) == ("extension", "extension", "header")
    assert g1["pixel_scale_source"] == "header" and np.isfinite(g1["sersic_r_e_arcsec"])
    assert not g1["flags"] & Flag.SIGMA_ESTIMATED and g1["n_saturated"] == 1
    assert (g2["psf_source"], g2["sigma_source"], g2["zeropoint_source"]) == ("none", "estimated", "option")
    assert g2["flags"] & Flag.SIGMA_ESTIMATED
    assert g2["flags"] & Flag.NO_PSF and not g1["flags"] & Flag.NO_PSF
    # mag relative to each zero-point: the same galaxy, 2 mag apart
    assert abs((g1["sersic_mag"] - 27.0) - (g2["sersic_mag"] - 25.0)) < 0.2


@pytest.mark.slow
def test_run_directory_of_simulated_cutouts_uses_their_psf_and_sigma(tmp_path):
    pytest.importorskip("galsim")
    from galmoss_auto.data_scripts.simulate import simulate
    manifest = simulate("sdss", "r", 2, 3, tmp_path / "sim", size=64, progress=False,
                        shards=False, workers=1)
    cat = _run(tmp_path / "sim" / "cutouts", tmp_path / "out")
    truth = {str(r["id"]): r for r in Table.read(tmp_path / "sim" / "truth.ecsv")}
    for gid, row in cat.items():
        assert (row["psf_source"], row["sigma_source"], row["zeropoint_source"]) == \
            ("extension", "extension", "header")
        assert not row["flags"] & (Flag.SIGMA_ESTIMATED | Flag.NO_ZEROPOINT)
        assert abs(row["sersic_mag"] - truth[gid]["sersic_mag"]) < 0.5
    assert manifest


def test_no_zeropoint_flag_in_run_error_in_fit(tmp_path, capsys):
    from galmoss_auto.pipelines.cli import main
    fits.PrimaryHDU(_galaxy()).writeto(tmp_path / "g.fits")
    cat = _run(tmp_path / "g.fits", tmp_path / "out")
    row = cat["g"]
    assert row["flags"] & Flag.NO_ZEROPOINT and row["zeropoint_source"] == "none"
    assert "no zero-point" in row["message"]
    assert main(["fit", str(tmp_path / "g.fits"), "--out", str(tmp_path / "fit")]) == 2
    err = capsys.readouterr().err
    assert "no zero-point" in err and "g.fits" in err and "--zeropoint" in err


def test_no_psf_flagged_in_run_and_fit(tmp_path):
    """A stamp with no PSF anywhere is fitted unconvolved: NO_PSF (not informational) and a
    message in run; fit flags it too.  A PSF from an option or a survey preset clears it."""
    from galmoss_auto.fitting.flags import is_clean_fit
    from galmoss_auto.pipelines.cli import main
    fits.PrimaryHDU(_galaxy()).writeto(tmp_path / "g.fits")
    fits.PrimaryHDU(_psf()).writeto(tmp_path / "psf.fits")
    row = _run(tmp_path / "g.fits", tmp_path / "none", zeropoint=25.0)["g"]
    assert row["flags"] & Flag.NO_PSF and row["psf_source"] == "none"
    assert "no PSF" in row["message"] and not is_clean_fit(row["flags"])
    for name, opts in (("option", {"psf": str(tmp_path / "psf.fits")}), ("survey", {"survey": "sdss", "band": "r"})):
        row = _run(tmp_path / "g.fits", tmp_path / name, zeropoint=25.0, **opts)["g"]
        assert row["psf_source"] == name and not row["flags"] & Flag.NO_PSF, name
    assert main(["fit", str(tmp_path / "g.fits"), "--zeropoint", "25", "--errors", "none",
                 "--out", str(tmp_path / "fit")]) == 0
    assert Table.read(tmp_path / "fit" / "catalog.fits")[0]["flags"] & Flag.NO_PSF


def test_fit_estimates_sigma_like_run(tmp_path):
    from galmoss_auto.fitting.noise import complete_noise
    from galmoss_auto.pipelines.cli import main
    fits.PrimaryHDU(_galaxy()).writeto(tmp_path / "g.fits")
    assert main(["fit", str(tmp_path / "g.fits"), "--zeropoint", "25", "--errors", "none",
                 "--out", str(tmp_path / "fit")]) == 0
    row = Table.read(tmp_path / "fit" / "catalog.fits")[0]
    assert row["flags"] & Flag.SIGMA_ESTIMATED and row["sigma_source"] == "estimated"
    cut = read_record({"id": "g", "image": str(tmp_path / "g.fits"), "zeropoint": 25.0})
    complete_noise(cut)
    assert np.median(cut.sigma) == pytest.approx(0.5, rel=0.1)   # the true noise
    assert float(row["sky_rms"]) == pytest.approx(float(np.median(cut.sigma)), rel=1e-6)


def test_bad_cutouts_same_in_fit_and_run(tmp_path, capsys):
    """5x5, 1x1, all-zero, bad sigma file, non-finite pixel scale, non-numeric zero-point:
    each only its own row, the same flags in fit and run, messages naming the faulty file."""
    from galmoss_auto.pipelines.cli import main
    fits.PrimaryHDU(_galaxy()).writeto(tmp_path / "good.fits")
    fits.PrimaryHDU(_galaxy()[:5, :5]).writeto(tmp_path / "small.fits")
    fits.PrimaryHDU(np.ones((1, 1), np.float32)).writeto(tmp_path / "one.fits")
    fits.PrimaryHDU(np.zeros((40, 40), np.float32)).writeto(tmp_path / "zero.fits")
    fits.PrimaryHDU(np.zeros((40, 40), np.float32)).writeto(tmp_path / "badsig_sigma.fits")
    fits.PrimaryHDU(_galaxy()).writeto(tmp_path / "badsig.fits")
    h = fits.PrimaryHDU(_galaxy())
    h.header["PIXSCALE"] = 0.0                       # FITS headers cannot hold inf
    h.writeto(tmp_path / "zeroscale.fits")
    rows = [("good", "good.fits", "", "25", ""), ("small", "small.fits", "", "25", ""),
            ("one", "one.fits", "", "25", ""), ("zero", "zero.fits", "", "25", ""),
            ("badsig", "badsig.fits", "badsig_sigma.fits", "25", ""),
            ("infscale", "good.fits", "", "25", "inf"), ("zpword", "good.fits", "", "twenty", ""),
            ("zeroscale", "zeroscale.fits", "", "25", "")]
    (tmp_path / "m.csv").write_text("id,image,sigma,zeropoint,pixel_scale\n"
                                    + "".join(",".join(r) + "\n" for r in rows))
    run_cat = _run(tmp_path / "m.csv", tmp_path / "run")
    assert main(["fit", "--manifest", str(tmp_path / "m.csv"), "--errors", "none",
                 "--out", str(tmp_path / "fit")]) == 0
    fit_cat = {str(r["id"]): r for r in Table.read(tmp_path / "fit" / "catalog.fits",
                                                   mask_invalid=False)}
    too_few = int(Flag.BAD_INPUT | Flag.TOO_FEW_PIXELS)
    expect = {"small": too_few, "one": too_few, "zero": int(Flag.BAD_INPUT),
              "badsig": int(Flag.BAD_INPUT), "infscale": int(Flag.BAD_INPUT),
              "zpword": int(Flag.BAD_INPUT), "zeroscale": int(Flag.BAD_INPUT)}
    for cat in (run_cat, fit_cat):
        assert not cat["good"]["flags"] & Flag.BAD_INPUT and np.isfinite(cat["good"]["sersic_mag"])
        for gid, bits in expect.items():
            assert int(cat[gid]["flags"]) & too_few == bits, (gid, cat[gid]["flags"])
            assert np.isnan(cat[gid]["sersic_mag"])
        assert "small.fits: too few pixels" in cat["small"]["message"]
        assert "zero.fits: empty cutout" in cat["zero"]["message"]
        assert "badsig_sigma.fits" in cat["badsig"]["message"]
        assert "m.csv: row 6" in cat["infscale"]["message"] and "not finite" in cat["infscale"]["message"]
        assert "zeroscale.fits: pixel scale must be finite and > 0" in cat["zeroscale"]["message"]
        assert "m.csv: row 7" in cat["zpword"]["message"] and "twenty" in cat["zpword"]["message"]


def test_saturation_option_and_header(tmp_path):
    img = _galaxy()
    img[20, 20] = 5000.0
    img[3, 3] = 800.0
    rec = {"id": "s", "image": img, "zeropoint": 25.0, "saturation": 700.0}
    cut = read_record(rec)
    assert cut.meta["n_saturated"] == 2 and cut.mask[20, 20] and cut.mask[3, 3]
    assert cut.flags & Flag.AUTO_MASKED_PIXELS
    h = fits.PrimaryHDU(img)
    h.header["SATURATE"] = 1000.0
    h.writeto(tmp_path / "s.fits")
    cut = read_record({"id": "s", "image": str(tmp_path / "s.fits"), "zeropoint": 25.0,
                       "defaults": {"saturation": (700.0, "option")}})
    assert cut.meta["n_saturated"] == 1 and cut.meta["sources"]["saturation"] == "header"


def test_wcs_pixel_scale_and_errors_name_the_file(tmp_path):
    h = fits.PrimaryHDU(_galaxy())
    h.header.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CD1_1=0.0, CD1_2=1.1e-4,
                    CD2_1=1.1e-4, CD2_2=0.0, ZP=22.5)
    h.writeto(tmp_path / "w.fits")
    cut = read_record({"id": "w", "image": str(tmp_path / "w.fits")})
    assert cut.pixel_scale == pytest.approx(0.396, rel=1e-3) and cut.zeropoint == 22.5
    with pytest.raises(CutoutError, match="nope.fits: sigma file not found"):
        read_record({"id": "w", "image": str(tmp_path / "w.fits"), "sigma": str(tmp_path / "nope.fits")})


def test_survey_gain_follows_the_image_unit(tmp_path):
    # a preset's gain is e- per unit of the preset's zero-point (SDSS: per nanomaggy, zp 22.5);
    # data given with another zero-point (ProFit's GAMA SDSS stamps: mag = -2.5 log10 flux) hold
    # 10^(0.4 (22.5 - 0)) nanomaggies per unit, so the gain per unit is that much larger
    from galmoss_auto.fitting.cutout import read_cutout
    from galmoss_auto.pipelines.config import survey_defaults
    rng = np.random.default_rng(3)
    image = rng.normal(0, 2e-11, (40, 40))
    d = survey_defaults("sdss", "r", tmp_path)
    defaults = {k: (v, "survey") for k, v in d.items()}
    assert d["gain_zeropoint"] == d["zeropoint"] == 22.5
    same = read_cutout(image, id="a", defaults=defaults)
    assert same.meta["gain"] == pytest.approx(d["gain"])
    other = read_cutout(image, id="a", zeropoint=0.0, defaults=defaults)
    assert other.meta["gain"] == pytest.approx(d["gain"] * 10 ** (0.4 * 22.5))
    # a gain the user gives is the user's, in the image's own unit
    given = read_cutout(image, id="a", zeropoint=0.0, gain=4.7, defaults=defaults)
    assert given.meta["gain"] == 4.7


@pytest.mark.shared
def test_survey_preset_on_stamps_in_other_units_detects_the_galaxy(shared_data, tmp_path):
    # ProFit's SDSS stamps (fluxes ~1e-11, zero-point 0) with --survey sdss: the galaxy is found
    # and fitted (with the preset's gain unconverted, sigma was ~1e6 x too large: no detection)
    from galmoss_auto.pipelines.config import RunConfig
    from galmoss_auto.pipelines.run import run
    base = shared_data / "profit_gama_kids_sdss" / "SDSS"
    Table({"id": ["G266033"], "image": [str(base / "G266033fitim.fits")],
           "psf": [str(base / "G266033psfim.fits")]}).write(tmp_path / "m.ecsv")
    run(RunConfig(input=str(tmp_path / "m.ecsv"), out=str(tmp_path / "o"), workers=0, progress=False,
                  survey="sdss", band="r", zeropoint=0.0, pixel_scale=0.339, mask="sep", init="sep"))
    cat = Table.read(tmp_path / "o" / "catalog.fits")
    assert not cat["flags"][0] & (Flag.NO_CENTRAL_DETECTION | Flag.INIT_FALLBACK | Flag.AT_BOUND)
    # Lange et al.'s single-Sersic magnitude of G266033: 17.391 - 0.753
    assert cat["sersic_mag"][0] == pytest.approx(16.64, abs=0.2)
