"""Image blocks (GALFIT-style multi-extension FITS) and PNG panels."""

import math

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galmoss_auto.fitting.blocks import elliptical_radius, plot_panel, radial_profile, write_image_blocks
from galmoss_auto.fitting.model import Model
from galmoss_auto.fitting.profiles import FlatSky, Sersic


def _images(rng, shape=(24, 30)):
    """A Gaussian blob plus sky as the model; data = model + noise; a masked corner."""
    rows, cols = np.indices(shape)
    blob = 50.0 * np.exp(-((cols + 1 - 16.0) ** 2 + (rows + 1 - 11.0) ** 2 / 0.5) / 8.0)
    sky = np.full(shape, 0.3)
    model = blob + sky
    data = model + rng.normal(0.0, 0.5, shape)
    mask = np.zeros(shape, bool)
    mask[:4, :4] = True
    return {"data": data, "model": model, "residual": data - model, "mask": mask,
            "bulge_inner": blob, "sky": sky}


def _row():
    t = Table({"id": ["gal-7"], "bulge_inner_x": [16.0], "bulge_inner_x_err": [0.01],
               "bulge_inner_mag": [17.25], "bulge_inner_mag_err": [0.02], "bulge_inner_r_e": [2.5],
               "bulge_inner_r_e_err": [np.nan], "bulge_inner_r_e_arcsec": [0.5],
               "bulge_inner_q": [0.7], "bulge_inner_pa": [10.0], "bulge_inner_y": [11.0],
               "bulge_inner_n": [1.0], "sky_sky": [0.3], "sky_sky_err": [0.001],
               "chi2_nu": [1.07], "n_iter": [9], "flags": [2], "n_bad_pixels": [3]})
    t["bulge_inner_x"].unit = "pix"
    return t[0]


def test_block_extensions_and_header(tmp_path, rng):
    images = _images(rng)
    model = Model([Sersic("bulge_inner"), FlatSky("sky")])
    path = write_image_blocks(tmp_path / "sub" / "gal-7.fits", images, _row(), model=model)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "DATA", "MODEL", "RESIDUAL", "MASK",
                                          "COMP_BULGE_INNER", "COMP_SKY"]
        assert hdul[0].data is None and hdul[0].header["OBJECT"] == "gal-7"
        np.testing.assert_allclose(hdul["DATA"].data, images["data"], rtol=1e-6)
        np.testing.assert_allclose(hdul["RESIDUAL"].data, images["data"] - images["model"], rtol=1e-5, atol=1e-5)
        assert hdul["MASK"].data.dtype == np.uint8 and hdul["MASK"].data.sum() == 16
        np.testing.assert_allclose(hdul["COMP_SKY"].data, 0.3, rtol=1e-6)
        assert hdul["COMP_BULGE_INNER"].header["COMPNAME"] == "bulge_inner"
        h = hdul["MODEL"].header
        # the longest component name owns a column: bulge_inner_x is not a "bulge" column
        assert h["COMP_1"] == "bulge_inner" and h["1_TYPE"] == "sersic" and h["COMP_2"] == "sky"
        assert h["1_XC"] == 16.0 and h["1_XC_E"] == 0.01 and h["1_YC"] == 11.0
        assert h["1_MAG"] == 17.25 and h["1_MAG_E"] == 0.02
        assert h["1_RE"] == 2.5 and h["1_RE_E"] == "nan"        # NaN cannot be a FITS number
        assert h["1_AR"] == 0.7 and h["1_PA"] == 10.0 and h["1_N"] == 1.0
        assert h["2_SKY"] == 0.3 and h["2_SKY_E"] == 0.001
        assert "1_RE_ARCSEC" not in h and "HIERARCH 1_REARCSEC" not in h
        assert (h["CHI2NU"], h["NITER"], h["FLAGS"], h["NBADPIX"]) == (1.07, 9, 2, 3)


def test_block_long_keywords_and_bad_input(tmp_path, rng):
    images = _images(rng)
    images = {k: images[k] for k in ("data", "model", "residual")} | {"sky": images["sky"]}
    row = {"id": "g", "sky_sky": 0.3, "sky_dsky_dx": 1e-3, "sky_dsky_dy": -2e-3}
    path = write_image_blocks(tmp_path / "g.fits", images, row)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "DATA", "MODEL", "RESIDUAL", "COMP_SKY"]
        assert hdul["MODEL"].header["1_DSDX"] == 1e-3 and hdul["MODEL"].header["1_DSDY"] == -2e-3
    with pytest.raises(KeyError, match="residual"):
        write_image_blocks(tmp_path / "x.fits", {"data": images["data"], "model": images["model"]})
    with pytest.raises(ValueError, match="shape"):
        write_image_blocks(tmp_path / "x.fits", images | {"model": np.zeros((3, 3))})


def test_elliptical_radius_follows_galfit_angles():
    # pa = 0: major axis along +y; q = 0.5 doubles distances along x
    r = elliptical_radius((21, 21), 11.0, 11.0, 0.5, 0.0)
    assert r[10 + 4, 10] == pytest.approx(4.0) and r[10, 10 + 4] == pytest.approx(8.0)
    # pa = 90: major axis along -x (counter-clockwise from +y)
    r = elliptical_radius((21, 21), 11.0, 11.0, 0.5, 90.0)
    assert r[10, 10 - 4] == pytest.approx(4.0) and r[10 + 4, 10] == pytest.approx(8.0)
    # pa = 45: the major axis points to (-1, +1)
    r = elliptical_radius((21, 21), 11.0, 11.0, 0.25, 45.0)
    assert r[10 + 3, 10 - 3] == pytest.approx(3 * math.sqrt(2)) and r[13, 13] == pytest.approx(12 * math.sqrt(2))


def test_radial_profile_means_and_mask():
    image = np.arange(25.0).reshape(5, 5)
    radius = elliptical_radius((5, 5), 3.0, 3.0, 1.0, 0.0)
    mask = np.zeros((5, 5), bool)
    mask[2, 3] = True                                   # one of the four r = 1 pixels
    mean, sem, count = radial_profile(image, mask, radius, np.array([0.0, 0.5, 1.2, 50.0]))
    assert count.tolist() == [1, 3, 20]
    assert mean[0] == 12.0 and mean[1] == pytest.approx((7 + 11 + 17) / 3)
    assert sem[0] == 0.0


def test_panel_png_written(tmp_path, rng):
    images = _images(rng)
    with_row = plot_panel(tmp_path / "panels" / "a.png", images, _row())
    without = plot_panel(tmp_path / "b.png", images, title="no catalog row")
    for path in (with_row, without):
        blob = path.read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 20_000
    # a failed fit (NaN model) still gives a panel
    nan = dict(images, model=np.full_like(images["model"], np.nan))
    assert plot_panel(tmp_path / "c.png", nan).stat().st_size > 10_000


def test_fit_and_run_write_the_same_block(tmp_path):
    """`galmoss-auto fit --blocks` and `galmoss-auto run --blocks` share one writer: the same
    HDUs and the same header keywords for the same model (issue 9, item 7)."""
    from galmoss_auto.fitting.cli_fit import main as fit_main
    from galmoss_auto.pipelines.config import RunConfig
    from galmoss_auto.pipelines.run import run

    rng = np.random.default_rng(4)
    n = 41
    rows, cols = np.indices((n, n))
    r2 = ((cols + 1 - 21.3) ** 2 + ((rows + 1 - 20.6) / 0.7) ** 2)
    image = 400.0 * np.exp(-np.sqrt(r2) / 2.5) + 10.0 + rng.normal(0.0, 1.0, (n, n))
    fits.PrimaryHDU(image.astype(np.float32)).writeto(tmp_path / "g1.fits")
    fits.PrimaryHDU(np.ones((n, n), np.float32)).writeto(tmp_path / "g1_sigma.fits")
    psf = np.exp(-np.add.outer((np.arange(11) - 5.0) ** 2, (np.arange(11) - 5.0) ** 2) / 4.0)
    fits.PrimaryHDU((psf / psf.sum()).astype(np.float32)).writeto(tmp_path / "psf.fits")
    Table({"id": ["g1"], "image": [str(tmp_path / "g1.fits")], "sigma": [str(tmp_path / "g1_sigma.fits")],
           "psf": [str(tmp_path / "psf.fits")], "zeropoint": [25.0], "pixel_scale": [0.2]}
          ).write(tmp_path / "manifest.ecsv")

    run(RunConfig(input=str(tmp_path / "manifest.ecsv"), out=str(tmp_path / "run"), mask="sep", init="sep",
                  blocks=True, workers=0, progress=False))
    with fits.open(tmp_path / "run" / "blocks" / "g1.fits") as hdul:
        run_names = [h.name for h in hdul]
        run_keys = [sorted(h.header) for h in hdul]
        h = hdul["MODEL"].header
        comps = [(h[f"COMP_{k}"], h[f"{k}_TYPE"]) for k in range(1, len(run_names) - 4)]
    assert comps[0] == ("sersic", "sersic")

    # the same model for `fit`, written out from the run's own block
    lines = "\n".join(f"  - {{name: {name}, type: {kind}}}" for name, kind in comps)
    (tmp_path / "model.yaml").write_text("components:\n" + lines + "\n")
    assert fit_main(["--manifest", str(tmp_path / "manifest.ecsv"), "--model", str(tmp_path / "model.yaml"),
                     "--out", str(tmp_path / "fit"), "--blocks"]) == 0
    with fits.open(tmp_path / "fit" / "blocks" / "g1.fits") as hdul:
        assert [h.name for h in hdul] == run_names
        assert [sorted(h.header) for h in hdul] == run_keys
        assert run_names[:5] == ["PRIMARY", "DATA", "MODEL", "RESIDUAL", "MASK"]
        assert "1_MAG" in hdul["MODEL"].header and "CHI2NU" in hdul["MODEL"].header
