"""The contract's batch stages in ``run``: batched maskers / initializers run in the main
process on each chunk, fall back to sep with MASK_FAILED / INIT_FALLBACK when they raise,
checkpoints outside their training range flag WEIGHTS_MISMATCH (or are refused with
--strict), ``auto`` falls back to sep without checkpoints, and per-row method columns."""

import io

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galmoss_auto.automask.base import MASKERS, MaskResult, Neighbour
from galmoss_auto.fitting.flags import Flag
from galmoss_auto.initnet.base import INITIALIZERS, InitResult


class _BatchMasker:
    name = "fakebatch"
    batched = True

    def __init__(self, fail=False, **_):
        self.fail = fail
        self.calls = []

    def mask_batch(self, cutouts, device):
        self.calls.append(len(cutouts))
        if self.fail:
            raise RuntimeError("network exploded")
        out = []
        for c in cutouts:
            assert c.sigma is not None and "sky" in c.meta      # the contract's promises
            m = np.zeros(c.shape, bool)
            m[:2, :2] = True
            out.append(MaskResult(mask=m, columns={"mask_n_masked": 4},
                                  neighbours=[Neighbour("star", {"x": 3.0, "y": 3.0, "mag": 20.0})],
                                  method="fakebatch"))
        return out


class _BatchInit:
    name = "fakeinit"
    batched = True

    def __init__(self, fail=False, **_):
        self.fail = fail

    def init_batch(self, cutouts, device):
        if self.fail:
            raise RuntimeError("bad weights")
        return [InitResult({"x": 16.5, "y": 16.5, "mag": 18.0, "r_e": 3.0, "n": 1.0, "q": 0.9,
                            "pa": 0.0}, 0, {"init_method": "fakeinit", "init_sersic_mag_err": 0.1})
                for _ in cutouts]


def _galaxy(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    return (40 * np.exp(-((xx - 15.5) ** 2 + (yy - 15.5) ** 2) / 12.0)
            + rng.normal(0, 0.5, (32, 32))).astype(np.float32)


@pytest.fixture
def cutdir(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    for i in range(3):
        h = fits.PrimaryHDU(_galaxy(i))
        h.header.update(MAGZP=25.0, PIXSCALE=0.4)
        h.writeto(d / f"g{i}.fits")
    return d


def _run(inp, out, **kw):
    from galmoss_auto.pipelines.config import RunConfig
    from galmoss_auto.pipelines.run import run
    stream = io.StringIO()
    rec = run(RunConfig(input=str(inp), out=str(out), workers=0, progress=False, errors="none",
                        **kw), stream=stream)
    cat = {str(r["id"]): r for r in Table.read(out / "catalog.fits", mask_invalid=False)}
    return rec, cat, stream.getvalue()


def test_batched_stages_run_and_fall_back(cutdir, tmp_path, monkeypatch):
    monkeypatch.setitem(MASKERS, "fakebatch", lambda **o: _BatchMasker(**o))
    monkeypatch.setitem(INITIALIZERS, "fakeinit", lambda **o: _BatchInit(**o))
    rec, cat, _ = _run(cutdir, tmp_path / "ok", mask="fakebatch", init="fakeinit")
    for row in cat.values():
        assert row["mask_method"] == "fakebatch" and row["init_method"] == "fakeinit"
        assert row["init_sersic_mag"] == 18.0 and row["init_sersic_mag_err"] == 0.1
        assert not row["flags"] & (Flag.MASK_FAILED | Flag.INIT_FALLBACK)
    assert rec["counts"]["mask_method"] == {"fakebatch": 3}
    # the masker's neighbours are fitted (neighbours.fits) or the row says why not: never silent
    try:
        from galmoss_auto.fitting.neighbours import fit_with_neighbours  # noqa: F401
        assert (tmp_path / "ok" / "neighbours.fits").is_file()
    except ImportError:
        assert all("neighbour(s) found but not fitted" in r["message"] for r in cat.values())


def test_failing_batched_stages_use_sep_with_flags(cutdir, tmp_path, monkeypatch):
    monkeypatch.setitem(MASKERS, "fakebatch", lambda **o: _BatchMasker(fail=True))
    monkeypatch.setitem(INITIALIZERS, "fakeinit", lambda **o: _BatchInit(fail=True))
    _, cat, _ = _run(cutdir, tmp_path / "bad", mask="fakebatch", init="fakeinit")
    for row in cat.values():
        assert row["flags"] & Flag.MASK_FAILED and row["flags"] & Flag.INIT_FALLBACK
        assert row["mask_method"] == "sep" and row["init_method"] == "sep"
        assert "network exploded" in row["message"] and "bad weights" in row["message"]
        assert np.isfinite(row["sersic_mag"])


def test_auto_without_checkpoints_is_sep(cutdir, tmp_path):
    rec, cat, log = _run(cutdir, tmp_path / "auto")
    assert all(r["mask_method"] == "sep" and r["init_method"] == "sep" for r in cat.values())
    assert rec["checkpoints"] == {} or all("sha256" in v for v in rec["checkpoints"].values())


def test_weights_mismatch_flag_and_strict_refusal():
    from galmoss_auto.automask.base import get_masker
    from galmoss_auto.fitting.cutout import read_cutout
    from galmoss_auto.fitting.noise import complete_noise
    from galmoss_auto.initnet.base import get_initializer
    from galmoss_auto.pipelines.prepare import BatchStages, Preparer
    masker = _BatchMasker()
    sep_m, sep_i = get_masker("sep"), get_initializer("sep")

    def items():
        c = read_cutout(_galaxy(0), id="a", zeropoint=25.0, pixel_scale=0.4)
        return [Preparer(masker, sep_i)(c)]
    check = {"mask": lambda c: ["pixel scale 0.4 arcsec/px is outside [0.1, 0.2]"]}
    warned = []
    got = items()
    BatchStages(masker, sep_i, sep_m, sep_i, check, strict=False, warn=warned.append)(got, "cpu")
    assert got[0].flags & Flag.WEIGHTS_MISMATCH and got[0].columns["mask_method"] == "fakebatch"
    assert warned and "outside" in got[0].columns["message"]
    got = items()
    BatchStages(masker, sep_i, sep_m, sep_i, check, strict=True)(got, "cpu")
    assert got[0].flags & Flag.WEIGHTS_MISMATCH and got[0].columns["mask_method"] == "sep"
    assert "refused (--strict)" in got[0].columns["message"]
    assert complete_noise  # the noise step ran inside Preparer


def test_weights_option_parsing():
    from galmoss_auto.pipelines.config import RunConfig, parse_weights
    assert parse_weights(["automask=a", "init=b.safetensors"]) == {"automask": "a", "initnet": "b.safetensors"}
    assert parse_weights(["zoo-name"]) == {"*": "zoo-name"}
    with pytest.raises(ValueError, match="unknown stage"):
        RunConfig(input="-", out="-", weights=("detector=x",))
    with pytest.raises(ValueError, match="sky must be one of"):
        RunConfig(input="-", out="-", sky="wavy")


@pytest.mark.slow
def test_auto_uses_a_zoo_initnet_checkpoint_and_records_it(cutdir, tmp_path):
    """A (random-weight) initnet checkpoint in a --zoo for the run's survey/band: ``--init auto``
    uses it per row and run.json records its name and sha256; --strict with a pixel scale
    outside its training range refuses it."""
    pytest.importorskip("lightning")
    import torch

    from galmoss_auto.initnet.export import export
    from galmoss_auto.initnet.lightning import build_module
    from galmoss_auto.pipelines.run import RunError
    torch.manual_seed(0)
    path = export(build_module(), tmp_path / "zoo", survey="sdss", bands=["r"],
                  training={"seed": 0}, evaluation={})
    rec, cat, _ = _run(cutdir, tmp_path / "z", zoo=str(tmp_path / "zoo"), survey="sdss",
                       band="r", mask="sep")
    assert rec["checkpoints"]["initnet"]["path"] == str(path)
    assert len(rec["checkpoints"]["initnet"]["sha256"]) == 64
    assert all(r["init_method"] in ("initnet", "sep") for r in cat.values())
    assert any(r["init_method"] == "initnet" for r in cat.values())
    with pytest.raises(RunError, match="refused under --strict"):
        _run(cutdir, tmp_path / "z2", zoo=str(tmp_path / "zoo"), survey="sdss", band="r",
             mask="sep", pixel_scale=5.0, strict=True)


def test_checkpoint_range_check_reads_the_psf_in_image_pixels():
    from dataclasses import replace

    from galmoss_auto.fitting import Cutout
    from galmoss_auto.pipelines.run import _compat_check

    yy, xx = np.indices((45, 45)) - 22
    fine = np.exp(-(xx ** 2 + yy ** 2) / (2 * (12.0 / 2.3548) ** 2))   # 4 image px, sampled 3 times finer
    cut = Cutout(id="c", image=np.ones((48, 48), np.float32), psf=fine / fine.sum(), psf_oversampling=3,
                 pixel_scale=0.25)
    check = _compat_check({"name": "x", "trained_for": {"psf_fwhm_arcsec": [0.8, 1.2]}})
    assert check(cut) == []                                   # 4 px x 0.25" = 1.0"
    assert check(replace(cut, psf_oversampling=1)) != []      # read as 12 px: 3.0", outside


def test_manifest_psf_oversampling_column(tmp_path):
    from galmoss_auto.fitting.cutout import CutoutError, read_record
    from galmoss_auto.fitting.records import read_manifest

    rng = np.random.default_rng(0)
    fits.writeto(tmp_path / "g.fits", rng.normal(0, 1, (32, 32)).astype(np.float32))
    yy, xx = np.indices((27, 27)) - 13
    fits.writeto(tmp_path / "p.fits", np.exp(-(xx ** 2 + yy ** 2) / 18.0).astype(np.float32))
    Table({"id": ["a", "b", "c"], "image": ["g.fits"] * 3, "psf": ["p.fits"] * 3,
           "psf_oversampling": [3.0, 2.5, 1.0]}).write(tmp_path / "m.ecsv")
    recs = read_manifest(tmp_path / "m.ecsv")
    assert read_record(recs[0]).psf_oversampling == 3 and read_record(recs[2]).psf_oversampling == 1
    # a fractional factor is refused, naming the value (never truncated to 2)
    with pytest.raises(CutoutError, match="psf_oversampling must be a positive integer.*2.5"):
        read_record(recs[1])
