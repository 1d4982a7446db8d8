"""The simulator's products: determinism across worker counts, the manifest / truth / objects
tables, per-galaxy FITS readable by the fitter's reader, shards and their dataset, the CLI,
presets and count specs."""

import argparse
import json
import math

import numpy as np
import pytest
from astropy.table import Table

from galmoss_auto.data_scripts import simulate as sim
from galmoss_auto.data_scripts.contaminants import ContaminantConfig, draw_count
from galmoss_auto.data_scripts.outputs import read_shard
from galmoss_auto.data_scripts.surveys import SurveyError, list_surveys, load_survey
from galmoss_auto.fitting.cutout import read_cutout


def _arrays(folder):
    out = {}
    for path in sorted((folder / "shards").glob("shard-*.npz")):
        for k, v in read_shard(path).items():
            out.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in out.items()}


def test_same_seed_same_data_whatever_the_workers(tmp_path):
    kw = dict(survey="sdss", band="r", n=6, seed=3, size=48, shard_size=2, progress=False,
              population="mixed", artifacts=True)
    sim.simulate(out=tmp_path / "w1", workers=1, fits=False, **kw)
    sim.simulate(out=tmp_path / "w2", workers=2, fits=False, **kw)
    a, b = _arrays(tmp_path / "w1"), _arrays(tmp_path / "w2")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    t1, t2 = Table.read(tmp_path / "w1" / "truth.ecsv"), Table.read(tmp_path / "w2" / "truth.ecsv")
    assert list(t1["id"]) == list(t2["id"])
    np.testing.assert_array_equal(np.asarray(t1["total_mag"]), np.asarray(t2["total_mag"]))
    # a different seed gives different cutouts
    other = sim.simulate_one(sim.SimConfig(survey=load_survey("sdss"), band="r", size=48), 0, 4)
    assert not np.array_equal(other["image"], a["image"][0])


def test_cli_writes_manifest_truth_and_readable_fits(tmp_path):
    out = tmp_path / "run"
    code = sim.main(["--survey", "sdss", "--band", "r", "--n", "3", "--seed", "1", "--out", str(out),
                     "--size", "48", "--workers", "1", "--quiet", "--preview", str(tmp_path / "p.png")])
    assert code == 0
    man = Table.read(out / "manifest.ecsv")
    assert {"id", "image", "sigma", "psf", "mask", "segmentation", "zeropoint", "pixel_scale",
            "gain"} <= set(man.colnames)
    assert len(man) == 3 and (out / "manifest.csv").is_file()
    truth = Table.read(out / "truth.ecsv")
    for col in ("id", "sersic_x", "sersic_y", "sersic_mag", "sersic_r_e", "sersic_r_e_arcsec", "sersic_n",
                "sersic_q", "sersic_pa", "psf_fwhm", "sky_sigma", "n_contaminants"):
        assert col in truth.colnames
    assert str(truth["sersic_r_e"].unit) == "pix" and str(truth["sersic_pa"].unit) == "deg"
    assert Table.read(out / "truth.fits")["id"][0] == truth["id"][0]
    objs = Table.read(out / "objects.ecsv")
    assert np.all(objs["label"][objs["kind"] == "central"] == 1)
    assert len(objs) == 3 + int(np.sum(truth["n_contaminants"]))
    row = man[0]
    cut = read_cutout(str(out / row["image"]), sigma=str(out / row["sigma"]), psf=str(out / row["psf"]),
                      id=row["id"])
    assert cut.zeropoint == 22.5 and cut.pixel_scale == pytest.approx(0.396)
    h, w = cut.psf.shape
    assert h % 2 == 1 and np.unravel_index(np.argmax(cut.psf), cut.psf.shape) == (h // 2, w // 2)
    assert cut.psf.sum() == pytest.approx(1.0)
    shard = read_shard(out / row["shard"])
    np.testing.assert_allclose(shard["image"][row["shard_index"]], cut.image, rtol=1e-6)
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_add_parser_registers_simulate(tmp_path):
    parser = argparse.ArgumentParser(prog="galmoss-auto")
    sub = parser.add_subparsers(dest="command")
    sim.add_parser(sub)
    args = parser.parse_args(["simulate", "--n", "3", "--out", str(tmp_path), "--size", "40",
                              "--workers", "1", "--quiet", "--no-fits", "--survey", "legacy", "--band", "z",
                              "--mag-range", "15", "16"])
    assert args.func(args) == 0
    truth = Table.read(tmp_path / "truth.ecsv")
    assert truth.meta["survey"] == "legacy"
    colour = load_survey("legacy").band("z").colour  # mag_range is in the reference band
    assert np.all((truth["total_mag"] >= 15 + colour) & (truth["total_mag"] <= 16 + colour))
    bad = parser.parse_args(["simulate", "--n", "2", "--out", str(tmp_path), "--band", "q", "--quiet"])
    assert bad.func(bad) == 2  # unknown band: clear error, no traceback


def test_blend_prob_option_reaches_the_scene_and_run_json(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="galmoss-auto")
    sim.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["simulate", "--n", "4", "--out", str(tmp_path / "all"), "--size", "40",
                              "--workers", "1", "--quiet", "--no-fits", "--blend-prob", "1"])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "all" / "run.json").read_text())["blend_prob"] == 1.0
    objects = Table.read(tmp_path / "all" / "objects.ecsv")
    assert sum(str(k) == "blend" for k in objects["kind"]) == 4       # one close blend per cutout
    sim.simulate(n=4, out=tmp_path / "none", size=40, workers=1, fits=False, progress=False, blend_prob=0.0)
    objects = Table.read(tmp_path / "none" / "objects.ecsv")
    assert not any(str(k) == "blend" for k in objects["kind"])
    bad = parser.parse_args(["simulate", "--n", "2", "--out", str(tmp_path / "bad"), "--quiet",
                             "--blend-prob", "1.5"])
    assert bad.func(bad) == 2 and "blend_prob must be in [0, 1], got 1.5" in capsys.readouterr().err


def test_shard_dataset_streams_every_cutout(tmp_path):
    torch = pytest.importorskip("torch")
    from galmoss_auto.data_scripts.shards import ShardDataset

    sim.simulate(n=5, seed=2, out=tmp_path, size=40, shard_size=2, workers=1, fits=False, progress=False)
    ds = ShardDataset(tmp_path, shuffle=True, seed=1)
    assert len(ds) == 5
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=0)
    batches = list(loader)
    ids = [i for b in batches for i in b["id"]]
    assert sorted(ids) == sorted(Table.read(tmp_path / "truth.ecsv")["id"])
    first = batches[0]
    assert first["image"].shape[1:] == (40, 40) and first["segmentation"].dtype == torch.int64
    assert first["truth"]["sersic_mag"].shape == (2,)
    half = ShardDataset(tmp_path, rank=1, world_size=2)
    assert 0 < len(half) < 5


def test_presets_load_and_are_self_consistent():
    names = list_surveys()
    assert {"sdss", "legacy", "hsc", "lsst"} <= set(names)
    assert set(load_survey("sdss").bands) == {"u", "g", "r", "i", "z"}
    assert set(load_survey("legacy").bands) == {"g", "r", "z"}
    assert load_survey("sdss").pixel_scale == 0.396 and load_survey("legacy").pixel_scale == 0.262
    for name in names:
        s = load_survey(name)
        for band in s.bands:
            # the sky noise, gain and median PSF reproduce the quoted depth; a completeness limit
            # (SDSS) lies up to ~1 mag brighter than the 5-sigma depth
            diff = s.derived_depth(band) - s.band(band).depth
            if s.depth_kind == "5sigma":
                assert abs(diff) < 0.15, (name, band, diff)
            else:
                assert -0.1 < diff < 1.0, (name, band, diff)


def test_bad_presets_name_the_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\npixel_scale = -1\n')
    with pytest.raises(SurveyError, match="mine.toml.*missing"):
        load_survey(path)
    text = (load_survey.__globals__["resources"].files("galmoss_auto.data_scripts") / "surveys" / "sdss.toml").read_text()
    path.write_text(text.replace("pixel_scale = 0.396", "pixel_scale = -0.4"))
    with pytest.raises(SurveyError, match="mine.toml: pixel_scale must be > 0"):
        load_survey(path)
    with pytest.raises(SurveyError, match="unknown survey 'nope'"):
        load_survey("nope")
    with pytest.raises(SurveyError, match="no band 'y'"):
        load_survey("sdss").band("y")


def test_count_specs():
    rng = np.random.default_rng(0)
    assert draw_count(rng, {"fixed": 3}) == 3
    assert all(2 <= draw_count(rng, [2, 4]) <= 4 for _ in range(20))
    assert np.mean([draw_count(rng, 2.0) for _ in range(2000)]) == pytest.approx(2.0, abs=0.15)
    for bad in ([3, 1], -1.0, {"gauss": 1}):
        with pytest.raises(ValueError):
            draw_count(rng, bad)
    with pytest.raises(ValueError, match="blend_prob"):
        ContaminantConfig(blend_prob=1.5)


def test_edge_objects_and_blends_occur():
    cc = ContaminantConfig(galaxy=6.0, blend_prob=1.0)
    cfg = sim.SimConfig(survey=load_survey("sdss"), band="r", size=64, contaminant_config=cc)
    edge = blends = 0
    for index in range(4):
        res = sim.simulate_one(cfg, index, 9)
        for o in res["objects"][1:]:
            blends += o["kind"] == "blend"
            edge += (o["x"] < 0.5 or o["x"] > 64.5 or o["y"] < 0.5 or o["y"] > 64.5) or \
                min(o["x"], o["y"], 65 - o["x"], 65 - o["y"]) < 2 * max(o["r_e"], 1.0)
    assert blends == 4 and edge >= 1
    assert not math.isnan(res["truth"]["psf_fwhm"])


@pytest.mark.shared
def test_user_psf_files(shared_data):
    path = shared_data / "psf_sdss_empirical_abdurrouf" / "psf_emp_sdss_r.fits.gz"
    from galmoss_auto.data_scripts.psf import read_psf_file

    with pytest.warns(UserWarning, match="flat at .* subtracted"):  # its 11 % pedestal
        psf = read_psf_file(path)  # PIXSCALE = 0.25 from the header, resampled to 0.396 "/px
    assert psf.pixel_scale == 0.25
    cfg = sim.SimConfig(survey=load_survey("sdss"), band="r", size=48, contaminants=False, psf_images=(psf,))
    res = sim.simulate_one(cfg, 0, 1)
    img = res["psf"]
    assert img.shape == (25, 25) and img.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.unravel_index(np.argmax(img), img.shape) == (12, 12)
    assert 0.9 < res["truth"]["psf_fwhm"] < 2.0  # arcsec; SDSS r seeing
    assert res["truth"]["psf_source"] == "psf_emp_sdss_r.fits.gz"
