"""``galmoss-auto run --model``: a multi-component model fitted by the pipeline, started from the
initializer's single-Sérsic start by the bulge + disk rule; resumes only with the same model."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galmoss_auto.fitting import Model, Sersic
from galmoss_auto.pipelines.cli import main
from galmoss_auto.pipelines.config import RunConfig
from galmoss_auto.pipelines.run import RunError, run

galsim = pytest.importorskip("galsim")

ZP, NOISE = 25.0, 2.0
TRUTH = {"g0": (3000.0, 9000.0), "g1": (5000.0, 5000.0)}      # bulge, disk flux
ARGS = ["--workers", "0", "--no-progress", "--mask", "sep", "--init", "sep", "--errors", "none",
        "--no-residual-search"]


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(5)
    (tmp_path / "img").mkdir()
    for gid, (fb, fd) in TRUTH.items():
        gal = (galsim.DeVaucouleurs(half_light_radius=1.5, flux=fb)
               + galsim.Exponential(half_light_radius=6.0, flux=fd).shear(q=0.6, beta=30 * galsim.degrees))
        image = galsim.ImageD(81, 81, scale=1.0)
        galsim.Convolve(gal, galsim.Gaussian(fwhm=2.0)).drawImage(image)
        data = image.array + rng.normal(0.0, NOISE, (81, 81))
        fits.HDUList([fits.PrimaryHDU(data), fits.ImageHDU(np.full((81, 81), NOISE), name="SIGMA")]
                     ).writeto(tmp_path / "img" / f"{gid}.fits")
    fits.PrimaryHDU(galsim.Gaussian(fwhm=2.0).drawImage(nx=15, ny=15, scale=1.0).array).writeto(tmp_path / "psf.fits")
    (tmp_path / "m.csv").write_text("id,image,zeropoint\n" + "".join(f"{g},img/{g}.fits,{ZP}\n" for g in TRUTH))
    (tmp_path / "bd.yaml").write_text("components:\n  - {name: bulge, type: sersic}\n"
                                      "  - {name: disk, type: expdisk}\n")
    return tmp_path


def test_bulge_disk_model_is_fitted_from_the_rule(inputs, capsys):
    out = inputs / "out"
    assert main(["run", str(inputs / "m.csv"), "--out", str(out), "--model", str(inputs / "bd.yaml"),
                 "--psf", str(inputs / "psf.fits"), *ARGS]) == 0
    cat = Table.read(out / "catalog.ecsv")
    assert "sersic_mag" not in cat.colnames and {"bulge_n", "disk_r_s", "sky_sky", "init_sersic_mag"} <= set(cat.colnames)
    for row in cat:
        fb, fd = TRUTH[row["id"]]
        b = 10 ** (-0.4 * (row["bulge_mag"] - ZP))
        d = 10 ** (-0.4 * (row["disk_mag"] - ZP))
        assert b + d == pytest.approx(fb + fd, rel=0.05)
        assert b / (b + d) == pytest.approx(fb / (fb + fd), abs=0.1)
        # the single-Sérsic start the rule spread over the two components is kept
        assert row["init_sersic_mag"] == pytest.approx(ZP - 2.5 * np.log10(fb + fd), abs=0.3)

    # the same model resumes; an edited one is refused, naming what changed
    assert main(["run", str(inputs / "m.csv"), "--out", str(out), "--model", str(inputs / "bd.yaml"),
                 "--psf", str(inputs / "psf.fits"), "--resume", *ARGS]) == 0
    (inputs / "bd.yaml").write_text("components:\n  - {name: bulge, type: sersic}\n"
                                    "  - {name: disk, type: expdisk}\nfixed: {bulge.n: 4}\n")
    capsys.readouterr()
    assert main(["run", str(inputs / "m.csv"), "--out", str(out), "--model", str(inputs / "bd.yaml"),
                 "--psf", str(inputs / "psf.fits"), "--resume", *ARGS]) == 2
    assert "model_hash" in capsys.readouterr().err
    # a run from before --model (the default single Sérsic) is not resumed with a model
    assert main(["run", str(inputs / "m.csv"), "--out", str(out), "--psf", str(inputs / "psf.fits"),
                 "--resume", *ARGS]) == 2


def test_unusable_model_exits_2_and_names_the_file(inputs, capsys):
    (inputs / "bad.yaml").write_text("components:\n  - {name: bulge, type: nosuchprofile}\n")
    for path in (inputs / "missing.yaml", inputs / "bad.yaml"):
        assert main(["run", str(inputs / "m.csv"), "--out", str(inputs / "o"), "--model", str(path), *ARGS]) == 2
        assert str(path) in capsys.readouterr().err
    assert not (inputs / "o").exists()          # refused before touching the output
    cfg = RunConfig(input=str(inputs / "m.csv"), out=str(inputs / "o"), model=str(inputs / "bd.yaml"))
    with pytest.raises(RunError, match="two models"):
        run(cfg, model=Model([Sersic("sersic")]))

