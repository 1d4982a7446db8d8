"""The residual search: a neighbour the masks missed is found in the fit's residual and fitted."""

import numpy as np
import pytest
import torch
from astropy.table import Table

from galmoss_auto.fitting import Cutout, fit
from galmoss_auto.fitting.neighbours import fit_with_neighbours
from galmoss_auto.fitting.cutout import psf_fwhm_px
from galmoss_auto.fitting.residual_sources import find_residual_sources

N = 6
SHAPE = (48, 48)


def _gauss(shape, x0, y0, s, flux):
    yy, xx = np.indices(shape, dtype=float)
    g = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s))
    return flux * g / g.sum()


def _search(data, model, x0=23.5, y0=23.5, fwhm=2.5, **kw):
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32))[None]  # noqa: E731
    return find_residual_sources(t(data), t(model), torch.ones(1, *SHAPE), torch.tensor([[x0, y0]]),
                                 torch.tensor([fwhm]), **kw)


def test_finds_a_lopsided_source_and_ignores_symmetric_residuals():
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 1, SHAPE)
    target = _gauss(SHAPE, 23.5, 23.5, 4.0, 3000.0)
    source = _gauss(SHAPE, 31.0, 20.0, 1.1, 150.0)  # ~20 sigma, 8.2 px from the centre
    found = _search(target + source + noise, target)
    assert found.found[0] and (found.x[0], found.y[0]) == (31.0, 20.0)
    assert found.snr[0] > 10 and 100 < found.flux[0] < 170
    # the same source 0.5 FWHM from the centre is the core's business, not a neighbour
    assert not _search(target + _gauss(SHAPE, 24.5, 23.5, 1.1, 150.0) + noise, target).found[0]
    # a point-symmetric misfit (a ring: the wrong Sérsic index) is not a source
    ring = _gauss(SHAPE, 23.5, 23.5, 6.0, 1500.0) - _gauss(SHAPE, 23.5, 23.5, 3.0, 1500.0)
    assert not _search(target + ring + noise, target).found[0]
    # pure noise: nothing at 4 sigma
    assert not _search(target + noise, target).found[0]
    # a real galaxy's own structure (two point-symmetric spiral arms the Sérsic leaves in the
    # residual) raises the floor a source must clear: a faint one found on a smooth galaxy is
    # refused on a structured one
    yy, xx = np.indices(SHAPE, dtype=float)
    r, th = np.hypot(xx - 23.5, yy - 23.5), np.arctan2(yy - 23.5, xx - 23.5)
    arms = 1500.0 * np.exp(-r / 6) * np.cos(2 * th + r / 3) / (2 * np.pi * 36)
    faint = _gauss(SHAPE, 31.0, 20.0, 1.1, 60.0)
    smooth = _search(target + faint + noise, target)
    assert smooth.found[0] and smooth.level[0] == pytest.approx(1.0, abs=0.3)
    structured = _search(target + arms + faint + noise, target)
    assert not structured.found[0] and structured.level[0] > 3
    # range errors name the bound
    with pytest.raises(ValueError, match="threshold must be > 0"):
        _search(target, target, threshold=0)
    with pytest.raises(ValueError, match="min_distance must be >= 0"):
        _search(target, target, min_distance=-1)


def test_psf_fwhm_in_image_pixels():
    psf = _gauss((25, 25), 12, 12, 2.0, 1.0)
    assert psf_fwhm_px(psf) == pytest.approx(2.355 * 2.0, rel=0.1)
    assert psf_fwhm_px(psf, oversampling=2) == pytest.approx(psf_fwhm_px(psf) / 2)
    assert psf_fwhm_px(None) is None and psf_fwhm_px(np.zeros((5, 5))) is None


@pytest.fixture(scope="module")
def sims(tmp_path_factory):
    """Bright centrals with one overlapping galaxy each, and the same centrals alone."""
    pytest.importorskip("galsim")
    from galmoss_auto.data_scripts.contaminants import ContaminantConfig
    from galmoss_auto.data_scripts.outputs import read_shard
    from galmoss_auto.data_scripts.simulate import simulate

    out = {}
    for name, contaminated in (("blend", True), ("alone", False)):
        d = tmp_path_factory.mktemp(name)
        simulate("sdss", "r", N, seed=4343, out=d, size=64, workers=1, fits=True, progress=False,
                 contaminants=contaminated, mag_range=(15.5, 17.5),
                 contaminant_config=ContaminantConfig(galaxy={"fixed": 0}, star={"fixed": 0}, blend_prob=1.0))
        out[name] = (d, read_shard(d / "shards" / "shard-00000.npz"), Table.read(d / "objects.ecsv"),
                     Table.read(d / "truth.ecsv"))
    return out


def _cutouts(sim):
    _, sh, _, truth = sim
    cuts = [Cutout(id=str(sh["id"][i]), image=sh["image"][i].astype(float), sigma=sh["sigma"][i].astype(float),
                   psf=sh["psf"][i].astype(float), zeropoint=22.5) for i in range(N)]
    # starts offset from the truth, as a moments initializer would give them
    init = {"sersic_x": truth["sersic_x"] + 0.5, "sersic_y": truth["sersic_y"] - 0.5,
            "sersic_mag": truth["sersic_mag"] + 0.3, "sersic_r_e": truth["sersic_r_e"] * 1.2,
            "sersic_n": np.full(N, 2.0), "sersic_q": np.full(N, 0.8), "sersic_pa": np.zeros(N)}
    return cuts, {k: np.asarray(v, float) for k, v in init.items()}


def test_search_fits_an_unlisted_neighbour(sims):
    _, _, obj, truth = sims["blend"]
    cuts, init = _cutouts(sims["blend"])
    plain = fit(cuts, init, device="cpu", errors="none")
    found, table = fit_with_neighbours(cuts, init, [[] for _ in cuts], device="cpu", errors="none", search=True)
    assert found.colnames == plain.colnames and list(found["id"]) == [c.id for c in cuts]
    assert len(table) >= N // 2 and set(table["origin"]) == {"residual"} and set(table["index"]) == {1}
    # each kept source is the simulated blend (within 2 px)
    for r in table:
        b = obj[(obj["id"] == r["id"]) & (obj["kind"] == "blend")][0]
        assert np.hypot(float(r["x"].value if hasattr(r["x"], "value") else r["x"]) - b["x"],
                        float(r["y"].value if hasattr(r["y"], "value") else r["y"]) - b["y"]) < 2.0
    dm_plain = np.abs(np.asarray(plain["sersic_mag"]) - truth["sersic_mag"])
    dm_found = np.abs(np.asarray(found["sersic_mag"]) - truth["sersic_mag"])
    assert np.median(dm_found) < 0.5 * np.median(dm_plain)
    # rows without a kept source are the plain fit's
    same = ~np.isin(np.asarray(found["id"]), np.asarray(table["id"]))
    assert np.allclose(np.asarray(found["sersic_mag"])[same], np.asarray(plain["sersic_mag"])[same])


def test_search_leaves_isolated_galaxies_alone(sims):
    cuts, init = _cutouts(sims["alone"])
    plain = fit(cuts, init, device="cpu", errors="none")
    found, table = fit_with_neighbours(cuts, init, [[] for _ in cuts], device="cpu", errors="none", search=True)
    assert len(table) == 0 and "origin" in table.colnames
    assert np.array_equal(np.asarray(found["sersic_mag"]), np.asarray(plain["sersic_mag"]))


def test_search_options_are_checked(sims):
    cuts, init = _cutouts(sims["alone"])
    with pytest.raises(ValueError, match="search_min_dchi2 must be > 0"):
        fit_with_neighbours(cuts, init, [[] for _ in cuts], search=True, search_min_dchi2=0)
    with pytest.raises(ValueError, match="search_threshold must be > 0"):
        fit_with_neighbours(cuts, init, [[] for _ in cuts], search=True, search_threshold=-1)


def test_cli_fit_residual_search(sims, tmp_path):
    from galmoss_auto.fitting.cli_fit import main

    out_dir, _, _, truth = sims["blend"]
    code = main(["--manifest", str(out_dir / "manifest.ecsv"), "--residual-search", "--out", str(tmp_path / "out"),
                 "--errors", "none"])
    assert code == 0
    table = Table.read(tmp_path / "out" / "neighbours.ecsv")
    assert len(table) >= 1 and set(table["origin"]) == {"residual"}


def test_run_option_and_resume_key():
    from galmoss_auto.pipelines.config import RESULT_KEYS, RunConfig
    from galmoss_auto.pipelines.cli import build_parser

    assert "residual_search" in RESULT_KEYS
    assert RunConfig(input="x", out="y").residual_search is True
    args = build_parser().parse_args(["run", "in", "--out", "o", "--no-residual-search"])
    assert RunConfig.from_args(args).residual_search is False


def test_run_from_before_the_search_resumes_with_it_off(tmp_path, capsys):
    """A run_config.json written before residual_search existed means a run without it: that
    run resumes with --no-residual-search and is refused with the search on."""
    import json

    from astropy.io import fits as pyfits

    from galmoss_auto.pipelines.cli import main

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:32, 0:32]
    (tmp_path / "img").mkdir()
    for i in range(2):
        img = 40 * np.exp(-((xx - 15.5) ** 2 + (yy - 15.5) ** 2) / 12.0) + rng.normal(0, 0.5, (32, 32))
        pyfits.PrimaryHDU(img.astype(np.float32)).writeto(tmp_path / "img" / f"g{i}.fits")
    manifest = tmp_path / "m.csv"
    manifest.write_text("id,image,zeropoint\n" + "".join(f"g{i},img/g{i}.fits,25\n" for i in range(2)))
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--workers", "0", "--no-progress", "--mask", "sep",
            "--init", "sep", "--errors", "none", "--no-residual-search"]
    assert main(args) == 0
    cfg = out / "run_config.json"
    old = json.loads(cfg.read_text())
    del old["residual_search"]
    cfg.write_text(json.dumps(old))
    assert main(args + ["--resume"]) == 0
    cfg.write_text(json.dumps(old))
    capsys.readouterr()
    assert main(args[:-1] + ["--resume"]) == 2
    assert "residual_search was False, now True" in capsys.readouterr().err
