"""``galmoss-auto run`` end to end on simulated cutouts with contaminants (the data_scripts
simulator), from the images and PSFs alone: recovered parameters against truth, sep masks
against the true segmentation, a corrupt and an empty cutout among good ones, and resume after
a process killed mid-run."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

pytest.importorskip("galsim")

from galmoss_auto.fitting.flags import Flag  # noqa: E402


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """12 SDSS-like 96x96 cutouts with neighbours and stars; a raw manifest (image, psf,
    zeropoint, pixel scale, gain: no sigma, no mask) plus one corrupt and one empty file."""
    from galmoss_auto.data_scripts.simulate import simulate
    root = tmp_path_factory.mktemp("sim")
    manifest = simulate("sdss", "r", 12, 11, root / "sim", size=96, progress=False, shards=False,
                        workers=1)
    full = Table.read(manifest)
    raw = full["id", "image", "psf", "zeropoint", "pixel_scale", "gain"]
    for col in ("image", "psf"):
        raw[col] = [str(Path(manifest).parent / p) for p in raw[col]]
    bad = root / "bad"
    bad.mkdir()
    (bad / "corrupt.fits").write_bytes(b"\x00" * 100)
    fits.PrimaryHDU(np.zeros((96, 96), np.float32)).writeto(bad / "empty.fits")
    raw.add_row({"id": "corrupt", "image": str(bad / "corrupt.fits"), "psf": raw["psf"][0],
                 "zeropoint": raw["zeropoint"][0], "pixel_scale": raw["pixel_scale"][0], "gain": raw["gain"][0]})
    raw.add_row({"id": "empty", "image": str(bad / "empty.fits"), "psf": raw["psf"][0],
                 "zeropoint": raw["zeropoint"][0], "pixel_scale": raw["pixel_scale"][0], "gain": raw["gain"][0]})
    raw_path = root / "raw.ecsv"
    raw.write(raw_path)
    return {"manifest": Path(manifest), "raw": raw_path, "full": full,
            "truth": Table.read(Path(manifest).parent / "truth.ecsv")}


@pytest.fixture(scope="module")
def result(sim, tmp_path_factory):
    from galmoss_auto.pipelines.config import RunConfig
    from galmoss_auto.pipelines.run import run
    out = tmp_path_factory.mktemp("run")
    record = run(RunConfig(input=str(sim["raw"]), out=str(out), chunk_size=5, workers=1,
                           progress=False))
    return out, record


@pytest.mark.slow
def test_catalog_complete_and_flags(sim, result):
    out, record = result
    cat = Table.read(out / "catalog.fits", mask_invalid=False)
    assert list(cat["id"]) == list(Table.read(sim["raw"])["id"])      # every id once, input order
    by = {str(r["id"]): r for r in cat}
    for bad in ("corrupt", "empty"):
        assert by[bad]["flags"] & Flag.BAD_INPUT and np.isnan(by[bad]["sersic_mag"])
        assert bad + ".fits" in by[bad]["message"]
    good = [r for r in cat if not r["flags"] & Flag.BAD_INPUT]
    assert len(good) == 12 and all(r["flags"] & Flag.SIGMA_ESTIMATED for r in good)
    assert record["counts"]["flags"]["BAD_INPUT"] == 2
    assert set(record["timings_s"]) >= {"read", "sigma", "mask", "init", "fit", "write", "total"}
    assert (out / "run.json").is_file() and (out / "catalog.ecsv").is_file()


@pytest.mark.slow
def test_recovered_parameters_close_to_truth(sim, result):
    out, _ = result
    cat = Table.read(out / "catalog.fits", mask_invalid=False)
    truth = {str(r["id"]): r for r in sim["truth"]}
    rows = [r for r in cat if str(r["id"]) in truth]
    dmag = np.array([r["sersic_mag"] - truth[str(r["id"])]["sersic_mag"] for r in rows])
    dlogr = np.array([np.log10(r["sersic_r_e"] / truth[str(r["id"])]["sersic_r_e"]) for r in rows])
    dx = np.array([np.hypot(r["sersic_x"] - truth[str(r["id"])]["sersic_x"],
                            r["sersic_y"] - truth[str(r["id"])]["sersic_y"]) for r in rows])
    catastrophic = (np.abs(dmag) > 0.5) | (np.abs(dlogr) > 0.3) | ~np.isfinite(dmag)
    assert catastrophic.mean() <= 0.25, (dmag, dlogr)
    ok = ~catastrophic
    assert np.median(np.abs(dmag[ok])) < 0.15
    assert np.median(np.abs(dlogr[ok])) < 0.08
    assert np.median(dx[ok]) < 0.5


def _contaminant_coverage(ids, cutout_files, get_mask, thresh=2.0):
    """(masked fraction of contaminant pixels brighter than ``thresh`` sigma in the noiseless
    scene, pooled; median masked fraction of the central galaxy's true segment)."""
    hit = total = 0
    target = []
    for gid, path in zip(ids, cutout_files):
        with fits.open(path) as h:
            seg, model, sigma = h["SEG"].data, h["MODEL"].data, h["SIGMA"].data
        mask = get_mask(gid)
        bright = (seg >= 2) & (model > thresh * sigma)
        hit += int(np.count_nonzero(mask[bright]))
        total += int(bright.sum())
        target.append(np.mean(mask[seg == 1]))
    return hit / max(total, 1), total, float(np.median(target))


@pytest.mark.slow
def test_sep_masks_cover_contaminants(sim, result):
    from galmoss_auto.pipelines.shards import ShardStore
    out, _ = result
    store = ShardStore(out)
    base = sim["manifest"].parent
    files = [base / str(r["image"]).split("[")[0] for r in sim["full"]]
    covered, total, target = _contaminant_coverage(
        [str(i) for i in sim["full"]["id"]], files, lambda g: (store.read_mask(g) & 2) != 0)
    assert total >= 50 and covered > 0.9
    assert target < 0.05


def test_sep_masker_on_crowded_simulation(tmp_path):
    """HSC-depth cutouts have many neighbours: sep masks nearly all their bright pixels."""
    from galmoss_auto.automask.sep_masker import SepMasker
    from galmoss_auto.data_scripts.simulate import simulate
    from galmoss_auto.fitting.cutout import read_cutout
    manifest = simulate("hsc", "i", 4, 5, tmp_path / "sim", size=96, progress=False, shards=False,
                        workers=1)
    base = Path(manifest).parent
    files = sorted((base / "cutouts").glob("*.fits"))
    masker = SepMasker()
    masks = {}
    for f in files:
        cut = read_cutout(f"{f}[0]", sigma=f"{f}[SIGMA]", id=f.stem)
        masks[f.stem] = masker(cut).mask
    covered, total, target = _contaminant_coverage([f.stem for f in files], files, masks.get)
    assert total >= 100 and covered > 0.85
    assert target < 0.05


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted(sim, result, tmp_path):
    """A run killed (os._exit, as kill -9) after its first shard resumes to the same catalog."""
    from galmoss_auto.pipelines.run import CRASH_ENV
    out_ref, _ = result
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "galmoss_auto.pipelines.cli", "run", str(sim["raw"]), "--out", str(out),
           "--chunk-size", "5", "--workers", "1", "--no-progress"]
    env = dict(os.environ, **{CRASH_ENV: "1"})
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 137, first.stderr
    assert len(list((out / "shards").glob("part-*.ecsv"))) == 1 and not (out / "catalog.fits").exists()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--resume" in again.stderr         # no silent overwrite
    second = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    a = Table.read(out_ref / "catalog.fits", mask_invalid=False)
    b = Table.read(out / "catalog.fits", mask_invalid=False)
    assert list(a["id"]) == list(b["id"]) and len(set(b["id"])) == len(b)
    import json
    rec = json.loads((out / "run.json").read_text())
    assert rec["counts"]["resumed_from_shards"] == 5 and rec["counts"]["processed_this_session"] == 9
    for name in a.colnames:
        if name in ("source",):
            continue
        if a[name].dtype.kind == "f":
            np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=name)
        else:
            assert list(a[name]) == list(b[name]), name
