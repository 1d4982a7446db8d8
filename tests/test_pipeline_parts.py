"""The pipeline's parts that do not need the fitter: inputs, the streaming dataset, per-galaxy
preparation (sigma estimation, empty cutouts), shards and resume bookkeeping, progress."""

import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galmoss_auto.fitting.dataset import CutoutDataset, CutoutFailure, cutout_loader
from galmoss_auto.fitting.flags import Flag
from galmoss_auto.pipelines.inputs import InputError, read_inputs
from galmoss_auto.pipelines.shards import ShardStore


def _write(path, data):
    fits.PrimaryHDU(np.asarray(data, dtype=">f4")).writeto(path, overwrite=True)  # big-endian, as on disk
    return path


@pytest.fixture
def galaxy_image(rng):
    yy, xx = np.mgrid[0:40, 0:40]
    return 50.0 * np.exp(-((xx - 19.5) ** 2 + (yy - 19.5) ** 2) / 18.0) + rng.normal(0, 0.5, (40, 40))


def test_manifest_relative_paths_defaults_and_errors(tmp_path, galaxy_image):
    (tmp_path / "img").mkdir()
    _write(tmp_path / "img" / "a.fits", galaxy_image)
    _write(tmp_path / "img" / "b.fits", galaxy_image)
    _write(tmp_path / "psf.fits", np.ones((5, 5)))
    Table({"id": ["a", "b"], "image": ["img/a.fits", "img/b.fits"], "zeropoint": [25.0, np.nan]}
          ).write(tmp_path / "m.csv", format="ascii.csv")
    recs = read_inputs(tmp_path / "m.csv", {"zeropoint": 30.0, "psf": str(tmp_path / "psf.fits")})
    assert [r["id"] for r in recs] == ["a", "b"]
    assert recs[0]["image"] == str(tmp_path / "img" / "a.fits")
    from galmoss_auto.fitting.cutout import read_record
    cuts = [read_record(r) for r in recs]
    assert [c.zeropoint for c in cuts] == [25.0, 30.0]          # the row wins, else the default
    assert [c.meta["sources"]["zeropoint"] for c in cuts] == ["manifest", "option"]
    assert cuts[1].psf is not None and cuts[1].meta["sources"]["psf"] == "option"

    Table({"id": ["a", "a"], "image": ["img/a.fits", "img/b.fits"]}).write(tmp_path / "dup.ecsv")
    with pytest.raises(InputError, match=r"dup\.ecsv: ids must be unique.*'a'"):
        read_inputs(tmp_path / "dup.ecsv")
    Table({"name": ["a"], "image": ["img/a.fits"]}).write(tmp_path / "bad.fits")
    with pytest.raises(InputError, match=r"bad\.fits: manifest lacks required column\(s\) \['id'\]"):
        read_inputs(tmp_path / "bad.fits")
    with pytest.raises(InputError, match="no such file"):
        read_inputs(tmp_path / "nothing_here")


def test_directory_and_glob_with_companions(tmp_path, galaxy_image):
    _write(tmp_path / "g1.fits", galaxy_image)
    _write(tmp_path / "g1_sigma.fits", np.ones((40, 40)))
    _write(tmp_path / "g1_psf.fits", np.ones((5, 5)))
    _write(tmp_path / "g2.fits", galaxy_image)
    recs = read_inputs(tmp_path)
    assert [r["id"] for r in recs] == ["g1", "g2"]               # companions are not images
    assert recs[0]["sigma"].endswith("g1_sigma.fits") and recs[0]["psf"].endswith("g1_psf.fits")
    assert "sigma" not in recs[1]
    assert [r["id"] for r in read_inputs(str(tmp_path / "g2*.fits"))] == ["g2"]


def test_dataset_turns_bad_files_into_failures(tmp_path, galaxy_image):
    good = _write(tmp_path / "good.fits", galaxy_image)
    (tmp_path / "corrupt.fits").write_bytes(b"SIMPLE  =   this is not FITS")
    recs = [{"id": "good", "image": str(good)}, {"id": "corrupt", "image": str(tmp_path / "corrupt.fits")},
            {"id": "missing", "image": str(tmp_path / "missing.fits")}]
    items = CutoutDataset(recs)
    assert items[0].id == "good" and items[0].image.dtype == np.float64
    assert isinstance(items[1], CutoutFailure) and "corrupt.fits" in items[1].message
    assert isinstance(items[2], CutoutFailure) and "not found" in items[2].message
    batches = list(cutout_loader(recs, batch_size=2, num_workers=1))
    assert [len(b) for b in batches] == [2, 1]
    assert [type(x).__name__ for b in batches for x in b] == ["Cutout", "CutoutFailure", "CutoutFailure"]


def test_prepare_estimates_sigma_and_rejects_empty(galaxy_image):
    from galmoss_auto.automask.base import get_masker
    from galmoss_auto.fitting.cutout import Cutout
    from galmoss_auto.initnet.base import get_initializer
    from galmoss_auto.pipelines.prepare import Prepared, Preparer

    prep = Preparer(get_masker("sep"), get_initializer("sep"))
    out = prep(Cutout(id="g", image=galaxy_image, zeropoint=20.0))
    assert isinstance(out, Prepared)
    assert out.flags & Flag.SIGMA_ESTIMATED and out.columns["sigma_estimated"]
    assert np.median(out.cutout.sigma) == pytest.approx(0.5, rel=0.1)   # the true noise is 0.5
    assert set(out.timings) >= {"sigma", "mask", "init"}
    # the one reader refuses an empty cutout (for fit and run alike)
    from galmoss_auto.fitting.cutout import CutoutError, read_record
    with pytest.raises(CutoutError, match="e: empty cutout"):
        read_record({"id": "e", "image": np.zeros((30, 30))})
    # Poisson term: with a gain the sigma map is larger on the galaxy than on the sky.
    from galmoss_auto.pipelines.prepare import estimate_sigma
    sig, _ = estimate_sigma(Cutout(id="g", image=galaxy_image), gain=1.0)
    assert sig[20, 20] > 3 * sig[0, 0]


def test_shards_atomic_resume_bookkeeping_and_merge(tmp_path):
    store = ShardStore(tmp_path)
    assert not store.exists() and store.next_index() == 0
    store.write(0, Table({"id": ["a", "b"], "flags": [0, 1], "x": [1.0, 2.0]}),
                [("a", np.zeros((4, 4), np.uint8)), ("b", np.ones((4, 4), np.uint8))])
    store.write(1, Table({"id": ["c"], "flags": [int(Flag.BAD_INPUT)], "message": ["bad"]}), None)
    (store.shard_dir / ".part-00002.ecsv.tmp999").write_text("half written")
    assert store.clean_temporaries() == 1
    assert store.done_ids() == {"a", "b", "c"} and store.next_index() == 2
    merged = store.merge(order=["c", "b", "a"])
    assert list(merged["id"]) == ["c", "b", "a"]
    assert np.isnan(merged["x"][0]) and merged["message"][1] == ""      # outer join filled
    assert store.read_mask("b").sum() == 16
    store.write(2, Table({"id": ["a"], "flags": [0], "x": [9.0]}), None)  # a redone galaxy
    merged = store.merge()
    assert sorted(merged["id"]) == ["a", "b", "c"] and merged["x"][list(merged["id"]).index("a")] == 9.0


def test_progress_line():
    from galmoss_auto.pipelines.progress import Progress, format_duration
    buf = io.StringIO()
    p = Progress(10, done=2, stream=buf, interval=0.0)
    p.update(3)
    assert "5/10" in buf.getvalue() and "gal/s" in buf.getvalue() and "left" in buf.getvalue()
    assert format_duration(3725) == "1:02:05" and format_duration(float("nan")) == "--:--:--"


def test_run_config_range_errors():
    from galmoss_auto.pipelines.config import RunConfig
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        RunConfig(input="x", out="y", chunk_size=0)
    with pytest.raises(ValueError, match="--survey and --band together"):
        RunConfig(input="x", out="y", survey="hsc")
    with pytest.raises(ValueError, match="gain must be > 0"):
        RunConfig(input="x", out="y", gain=-1.0)


def test_survey_preset_defaults(tmp_path):
    from galmoss_auto.pipelines.config import survey_defaults
    d = survey_defaults("hsc", "i", tmp_path)
    assert d["pixel_scale"] == pytest.approx(0.168) and d["zeropoint"] == pytest.approx(27.0)
    psf = fits.getdata(d["psf"])
    assert psf.shape[0] % 2 == 1 and psf.sum() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(psf), psf.shape) == (psf.shape[0] // 2, psf.shape[1] // 2)


def test_catalog_initializer_overrides_sep(tmp_path, galaxy_image):
    from galmoss_auto.fitting.cutout import Cutout
    from galmoss_auto.initnet.base import get_initializer
    Table({"id": ["g"], "sersic_n": [3.3], "sersic_r_e": [np.nan]}).write(tmp_path / "init.ecsv")
    init = get_initializer(str(tmp_path / "init.ecsv"))
    res = init(Cutout(id="g", image=galaxy_image, sigma=np.full((40, 40), 0.5)))
    assert res.params["n"] == 3.3 and res.columns["init_from_catalog"]
    assert 1.0 < res.params["r_e"] < 10.0                     # NaN cell: sep's value
    other = init(Cutout(id="other", image=galaxy_image, sigma=np.full((40, 40), 0.5)))
    assert other.flags & Flag.INIT_FALLBACK and not other.columns["init_from_catalog"]
    with pytest.raises(ValueError, match="unknown initializer 'nope'"):
        get_initializer("nope")


def test_run_survey_toml_resolves_under_its_preset_name(tmp_path):
    """``run --survey FILE.toml`` looks checkpoints up under the file's ``name`` (what ``train``
    registers them as), not under the path."""
    from galmoss_auto.pipelines import run
    src = Path(run.__file__).resolve().parents[1] / "data_scripts" / "surveys" / "sdss.toml"
    toml = tmp_path / "mysurvey.toml"
    toml.write_text(src.read_text().replace('name = "sdss"', 'name = "mysurvey"'))
    assert run._survey_name(str(toml)) == "mysurvey"
    assert run._survey_name("legacy") == "legacy" and run._survey_name(None) is None
