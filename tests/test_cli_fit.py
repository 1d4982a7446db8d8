"""``galmoss-auto fit`` end to end: real FITS files in, catalog (and blocks, panels) out."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galmoss_auto.fitting.cli_fit import main
from galmoss_auto.fitting.flags import Flag

galsim = pytest.importorskip("galsim")

ZP = 25.0
NOISE = 2.0


def _sersic(size, x, y, hlr, q, beta_deg, n, flux, rng, psf_fwhm=2.0):
    """GalSim Sérsic convolved with a Gaussian PSF, centred at 1-based (x, y), plus noise."""
    gal = galsim.Sersic(n=n, half_light_radius=hlr, flux=flux).shear(q=q, beta=beta_deg * galsim.degrees)
    image = galsim.ImageD(size[1], size[0], scale=1.0)          # (ncol, nrow)
    # GalSim's true centre of an image with bounds 1..N is (N+1)/2, 1-based like FITS
    offset = (x - (size[1] + 1) / 2, y - (size[0] + 1) / 2)
    galsim.Convolve(gal, galsim.Gaussian(fwhm=psf_fwhm)).drawImage(image, offset=offset)
    return image.array + rng.normal(0.0, NOISE, size)


def _psf(path):
    fits.PrimaryHDU(galsim.Gaussian(fwhm=2.0).drawImage(nx=15, ny=15, scale=1.0).array).writeto(path)


TRUTH = {"g1": dict(hlr=3.0, q=0.6, beta=30.0, n=1.5), "g2": dict(hlr=4.0, q=0.8, beta=-20.0, n=3.0)}


@pytest.fixture
def cutouts(tmp_path, rng):
    for gid, t in TRUTH.items():
        img = _sersic((41, 41), 21.0, 21.0, t["hlr"], t["q"], t["beta"], t["n"], 5000.0, rng)
        hdr = fits.Header({"MAGZP": ZP, "PIXSCALE": 0.2})
        fits.PrimaryHDU(img, hdr).writeto(tmp_path / f"{gid}.fits")
        fits.PrimaryHDU(np.full(img.shape, NOISE)).writeto(tmp_path / f"{gid}_sigma.fits")
    (tmp_path / "broken.fits").write_bytes(b"SIMPLE  =                    T / truncated, not a FITS file")
    _psf(tmp_path / "psf.fits")
    init = Table({"id": ["broken", "g2", "g1"], "sersic_x": [21.0] * 3, "sersic_y": [21.5] * 3,
                  "sersic_mag": [16.0] * 3, "sersic_r_e": [3.0] * 3, "sersic_n": [2.0] * 3,
                  "sersic_q": [0.8] * 3, "sersic_pa": [0.0] * 3})
    init.write(tmp_path / "init.ecsv")
    return tmp_path


@pytest.mark.slow
def test_fit_two_cutouts_and_a_broken_one(cutouts, capsys):
    d = cutouts
    out = d / "out"
    rc = main([str(d / "g1.fits"), str(d / "broken.fits"), str(d / "g2.fits"), "--init", str(d / "init.ecsv"),
               "--sigma-suffix", "_sigma", "--psf", str(d / "psf.fits"), "--out", str(out),
               "--blocks", "--png"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "broken.fits" in err and "BAD_INPUT" in err
    cat = Table.read(out / "catalog.ecsv")
    assert Table.read(out / "catalog.fits")["id"].tolist() == ["g1", "broken", "g2"]
    assert cat["id"].tolist() == ["g1", "broken", "g2"]
    bad = cat[1]
    assert bad["flags"] & int(Flag.BAD_INPUT) and np.isnan(bad["sersic_r_e"]) and np.isnan(bad["chi2_nu"])
    assert "broken.fits" in cat.meta["BADINPUT"]
    for row in (cat[0], cat[2]):
        t = TRUTH[row["id"]]
        assert not row["flags"] & int(Flag.BAD_INPUT)
        # GalSim's circularised hlr -> GALFIT's major-axis r_e; beta from +x -> pa from +y
        assert row["sersic_r_e"] == pytest.approx(t["hlr"] / np.sqrt(t["q"]), rel=0.1)
        assert row["sersic_q"] == pytest.approx(t["q"], abs=0.05)
        assert ((row["sersic_pa"] - (t["beta"] - 90.0) + 90) % 180 - 90) == pytest.approx(0.0, abs=4.0)
        assert row["sersic_x"] == pytest.approx(21.0, abs=0.1) and 0.5 < row["chi2_nu"] < 1.5
        assert row["sersic_r_e_arcsec"] == pytest.approx(0.2 * row["sersic_r_e"])
    for gid in ("g1", "g2"):
        with fits.open(out / "blocks" / f"{gid}.fits") as hdul:
            assert [h.name for h in hdul][:4] == ["PRIMARY", "DATA", "MODEL", "RESIDUAL"]
            assert hdul["MODEL"].header["1_RE"] == pytest.approx(float(cat[cat["id"] == gid]["sersic_r_e"][0]))
            assert "COMP_SERSIC" in hdul
        assert (out / "panels" / f"{gid}.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / "blocks" / "broken.fits").exists()


def test_manifest_order_matching_and_model_file(cutouts):
    d = cutouts
    # ids that look like numbers stay text; the init table (no id column) is matched by order
    (d / "m.csv").write_text("id,image,sigma,zeropoint\n007,g1.fits,g1_sigma.fits,25.0\n"
                             "008,missing.fits,,\n")
    Table({"sersic_x": [21.0, 21.0], "sersic_r_e": [3.0, 3.0], "sersic_n": [2.0, 2.0]}).write(d / "init.fits")
    (d / "model.yaml").write_text("components: [{name: sersic, type: sersic}]\nfixed: {sersic.n: 1.5}\n")
    out = d / "o"
    assert main(["--manifest", str(d / "m.csv"), "--init", str(d / "init.fits"), "--model",
                 str(d / "model.yaml"), "--psf", str(d / "psf.fits"), "--errors", "none", "--out", str(out)]) == 0
    cat = Table.read(out / "catalog.ecsv")
    assert [str(i) for i in cat["id"]] == ["007", "008"]
    assert cat["flags"][1] & int(Flag.BAD_INPUT) and not cat["flags"][0] & int(Flag.BAD_INPUT)
    assert cat["sersic_n"][0] == 1.5 and np.isnan(cat["sersic_r_e_err"][0])
    assert cat["sersic_r_e"][0] == pytest.approx(3.0 / np.sqrt(0.6), rel=0.1)


def test_feedme_on_its_own_image_region_and_text_mask(tmp_path, rng):
    # a 60 x 80 image; GALFIT fits the region x 21..61, y 11..51 around a galaxy at (41.0, 31.0)
    img = _sersic((60, 80), 41.0, 31.0, 3.0, 0.7, 60.0, 1.0, 4000.0, rng)
    img[5, 70] = 1e6                      # a hot pixel outside the region
    img[40, 30] = 5e4                     # a hot pixel inside it, listed in the text mask
    fits.PrimaryHDU(img).writeto(tmp_path / "big.fits")
    fits.PrimaryHDU(np.full(img.shape, NOISE)).writeto(tmp_path / "big_sigma.fits")
    _psf(tmp_path / "psf.fits")
    (tmp_path / "bad.txt").write_text("# x y\n31 41\n")
    (tmp_path / "g.feedme").write_text("""\
A) big.fits
B) imgblock.fits
C) big_sigma.fits
D) psf.fits
E) 1
F) bad.txt
H) 21 61 11 51
J) 24.0
K) 0.5 0.5
 0) sersic
 1) 40.0 32.0 1 1
 3) 16.5 1
 4) 4.0 1
 5) 1.0 0
 9) 0.8 1
10) 0.0 1
 Z) 0
""")
    out = tmp_path / "out"
    assert main(["--model", str(tmp_path / "g.feedme"), "--out", str(out), "--blocks"]) == 0
    row = Table.read(out / "catalog.ecsv")[0]
    assert row["id"] == "big" and row["flags"] & int(Flag.BAD_INPUT) == 0
    # positions come back in the full image's coordinates, as GALFIT reports them
    assert row["sersic_x"] == pytest.approx(41.0, abs=0.1) and row["sersic_y"] == pytest.approx(31.0, abs=0.1)
    assert row["sersic_n"] == 1.0                                   # toggle 0: fixed
    assert row["sersic_r_e"] == pytest.approx(3.0 / np.sqrt(0.7), rel=0.1)
    assert row["sersic_r_e_arcsec"] == pytest.approx(0.5 * row["sersic_r_e"])
    assert row["sersic_mag"] == pytest.approx(24.0 - 2.5 * np.log10(4000.0), abs=0.05)
    with fits.open(out / "blocks" / "big.fits") as hdul:
        assert hdul["DATA"].data.shape == (41, 41)                  # the region only
        assert hdul["MASK"].data[40 - 10, 30 - 20] == 1            # the listed pixel, region-relative
        assert hdul["MODEL"].header["1_XC"] == pytest.approx(row["sersic_x"])


def test_usage_errors_exit_2_and_name_the_file(cutouts, capsys):
    d = cutouts
    assert main(["--out", str(d / "o")]) == 2
    assert "no cutouts" in capsys.readouterr().err
    Table({"sersic_x": [1.0, 2.0, 3.0]}).write(d / "three.ecsv")
    assert main([str(d / "g1.fits"), "--init", str(d / "three.ecsv"), "--out", str(d / "o")]) == 2
    assert "three.ecsv: no id column and 3 rows for 1 cutouts" in capsys.readouterr().err
    (d / "m.yaml").write_text("components: [{type: sersic, size: 3}]\n")
    assert main([str(d / "g1.fits"), "--model", str(d / "m.yaml"), "--out", str(d / "o")]) == 2
    assert "m.yaml: components[0]: unknown key(s) ['size']" in capsys.readouterr().err
    # every cutout unusable: the catalog is still written, exit status 1
    assert main([str(d / "broken.fits"), "--out", str(d / "o")]) == 1
    assert Table.read(d / "o" / "catalog.ecsv")["flags"][0] == int(Flag.BAD_INPUT)


def test_registered_on_the_galmoss_auto_command():
    from galmoss_auto.pipelines.cli import build_parser
    from galmoss_auto.fitting.cli_fit import run_args

    args = build_parser().parse_args(["fit", "a.fits", "b.fits", "--init", "i.ecsv", "--out", "o", "--png"])
    assert args.func is run_args and args.cutouts == ["a.fits", "b.fits"] and args.png and not args.blocks


def _bulge_disk(size, rng, offset, bulge_flux=3000.0, disk_flux=9000.0):
    """A de Vaucouleurs bulge (hlr 1.5 px) in an exponential disk (hlr 6 px, q 0.6), Gaussian
    PSF, ``offset`` (dx, dy) px from the cutout centre."""
    gal = (galsim.DeVaucouleurs(half_light_radius=1.5, flux=bulge_flux)
           + galsim.Exponential(half_light_radius=6.0, flux=disk_flux).shear(q=0.6, beta=30 * galsim.degrees))
    image = galsim.ImageD(size, size, scale=1.0)
    galsim.Convolve(gal, galsim.Gaussian(fwhm=2.0)).drawImage(image, offset=offset)
    return image.array + rng.normal(0.0, NOISE, (size, size))


def test_open_starts_come_from_sep_by_the_bulge_disk_rule(tmp_path, rng):
    """No --init: a bulge + disk model starts from sep moments spread by the rule (the fitter's
    generic guess, at the cutout centre, fails three bulge + disk fits in four, and this galaxy
    10 px off the centre: all its light goes into the bulge and the total is 24 % too bright)."""
    fits.PrimaryHDU(_bulge_disk(51, rng, (10, -7)), fits.Header({"MAGZP": ZP})).writeto(tmp_path / "bd.fits")
    fits.PrimaryHDU(np.full((51, 51), NOISE)).writeto(tmp_path / "bd_sigma.fits")
    _psf(tmp_path / "psf.fits")
    (tmp_path / "bd.yaml").write_text("components:\n  - {name: bulge, type: sersic}\n"
                                      "  - {name: disk, type: expdisk}\n")
    out = tmp_path / "out"
    assert main([str(tmp_path / "bd.fits"), "--model", str(tmp_path / "bd.yaml"),
                 "--sigma-suffix", "_sigma", "--psf", str(tmp_path / "psf.fits"), "--errors", "none",
                 "--out", str(out)]) == 0
    cat = Table.read(out / "catalog.ecsv")
    bd = cat[0]
    flux_b, flux_d = 10 ** (-0.4 * (bd["bulge_mag"] - ZP)), 10 ** (-0.4 * (bd["disk_mag"] - ZP))
    assert flux_b + flux_d == pytest.approx(12000.0, rel=0.05)
    assert flux_b / (flux_b + flux_d) == pytest.approx(0.25, abs=0.1)
    assert bd["disk_q"] == pytest.approx(0.6, abs=0.05) and not bd["flags"] & int(Flag.INIT_FALLBACK)
    assert (bd["bulge_x"], bd["bulge_y"]) == (pytest.approx(36.0, abs=0.3), pytest.approx(19.0, abs=0.3))


def test_sky_left_in_is_flagged_and_sky_flat_fits_it(tmp_path, rng, capsys):
    """A cutout that still holds its sky (a pedestal of 20 sigma), fitted without a sky
    component, is fitted as asked but flagged SKY_NOT_MODELLED, with a warning naming the file:
    the Sérsic absorbs the sky.  ``--sky flat`` fits the pedestal instead and gives the
    sky-free fit; a sky-subtracted cutout is never flagged."""
    t = TRUTH["g1"]
    img = _sersic((41, 41), 21.0, 21.0, t["hlr"], t["q"], t["beta"], t["n"], 5000.0, rng)
    pedestal = 20.0 * NOISE
    for gid, data in (("clean", img), ("sky", img + pedestal)):
        fits.PrimaryHDU(data, fits.Header({"MAGZP": ZP})).writeto(tmp_path / f"{gid}.fits")
        fits.PrimaryHDU(np.full(img.shape, NOISE)).writeto(tmp_path / f"{gid}_sigma.fits")
    _psf(tmp_path / "psf.fits")
    files = [str(tmp_path / "clean.fits"), str(tmp_path / "sky.fits")]
    common = ["--sigma-suffix", "_sigma", "--psf", str(tmp_path / "psf.fits"), "--errors", "none"]
    assert main(files + common + ["--out", str(tmp_path / "as_given")]) == 0
    err = capsys.readouterr().err
    assert "sky.fits" in err and "SKY_NOT_MODELLED" in err and "clean.fits" not in err
    given = Table.read(tmp_path / "as_given" / "catalog.ecsv")
    assert not given["flags"][0] & int(Flag.SKY_NOT_MODELLED)
    assert given["flags"][1] & int(Flag.SKY_NOT_MODELLED)
    assert given["sky_level"][1] == pytest.approx(pedestal, abs=1.0)   # measured with a sigma map too
    assert given["sersic_mag"][1] < given["sersic_mag"][0] - 0.5        # the sky went into the galaxy

    assert main(files + common + ["--sky", "flat", "--out", str(tmp_path / "flat")]) == 0
    flat = Table.read(tmp_path / "flat" / "catalog.ecsv")
    assert not np.any(flat["flags"] & int(Flag.SKY_NOT_MODELLED))
    assert flat["sky_sky"][0] == pytest.approx(0.0, abs=0.3) and flat["sky_sky"][1] == pytest.approx(pedestal, abs=0.3)
    assert flat["sersic_mag"][1] == pytest.approx(given["sersic_mag"][0], abs=0.05)
    assert flat["sersic_r_e"][1] == pytest.approx(given["sersic_r_e"][0], rel=0.05)
