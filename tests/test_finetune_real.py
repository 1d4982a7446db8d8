"""Fine-tuning on real cutouts sees what ``run``'s initializer sees: the cutouts prepared by the
run's own code (sky measured and removed, neighbours masked, survey defaults), the PSF read at
its own sampling by both the network's inputs and the χ² loss's renderer."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table

from galmoss_auto.fitting.cutout import Cutout
from galmoss_auto.fitting.noise import SkyEstimate
from galmoss_auto.fitting.tensor_render import render_batch
from galmoss_auto.initnet.data import collate, labelled_items
from galmoss_auto.initnet.inputs import stack_cutouts
from galmoss_auto.initnet.lightning import build_datamodule, build_module
from galmoss_auto.initnet.loss import chi2_nu

sys.path.insert(0, str(Path(__file__).parent))
from initnet_helpers import TINY, moffat_psf

ZP, NOISE, SKY = 25.0, 0.05, 3.0


def _gauss(sigma, size):
    r2 = np.sum(np.stack(np.mgrid[-(size // 2):size // 2 + 1, -(size // 2):size // 2 + 1]) ** 2, axis=0)
    p = np.exp(-0.5 * r2 / sigma ** 2)
    return (p / p.sum()).astype(np.float32)


def _params(n, size, seed=0):
    rng = np.random.default_rng(seed)
    truth = {"x": size / 2 + 0.5 + rng.uniform(-1, 1, n), "y": size / 2 + 0.5 + rng.uniform(-1, 1, n),
             "mag": rng.uniform(17.5, 18.5, n), "r_e": rng.uniform(2.0, 4.0, n),
             "n": rng.uniform(0.8, 2.5, n), "q": rng.uniform(0.5, 0.95, n), "pa": rng.uniform(-80, 80, n)}
    p = {k: torch.tensor(v, dtype=torch.float32) for k, v in truth.items()}
    p["x"], p["y"], p["pa"] = p["x"] - 1, p["y"] - 1, torch.deg2rad(p["pa"])
    return truth, p


def test_render_batch_reads_an_oversampled_psf_at_its_own_sampling():
    """A Gaussian PSF of sigma 2 px given at 3x sampling renders as the same PSF at 1x; read
    at 1x it would be three times too wide.  A batch may mix samplings."""
    _, p = _params(2, 40)
    zp = torch.full((2,), ZP)
    native = torch.as_tensor(np.stack([_gauss(2.0, 21)] * 2))
    fine = torch.as_tensor(np.stack([_gauss(6.0, 63)] * 2))
    ref = render_batch(p, zp, native, (40, 40), psf_includes_pixel=False)
    over = render_batch(p, zp, fine, (40, 40), psf_includes_pixel=False, oversampling=3)
    wrong = render_batch(p, zp, fine, (40, 40), psf_includes_pixel=False)
    peak = float(ref.abs().max())
    assert float((over - ref).abs().max()) < 1e-3 * peak
    assert float((wrong - ref).abs().max()) > 0.1 * peak
    # mixed: galaxy 0 at 1x (its PSF zero-padded to the fine one's size), galaxy 1 at 3x
    padded = torch.nn.functional.pad(native[0], (21, 21, 21, 21))
    mixed = render_batch(p, zp, torch.stack([padded, fine[1]]), (40, 40), psf_includes_pixel=False,
                         oversampling=torch.tensor([1.0, 3.0]))
    assert float((mixed - ref).abs().max()) < 1e-3 * peak
    with pytest.raises(ValueError, match="oversampling must be positive integers.*2.5"):
        render_batch(p, zp, fine, (40, 40), oversampling=2.5)
    with pytest.raises(ValueError, match="3 values for 2 galaxies"):
        render_batch(p, zp, fine, (40, 40), oversampling=[1, 3, 3])


def _oversampled_cutouts(n=4, size=40, seed=3):
    """Galaxies rendered with a Moffat PSF given at 3x sampling, on a sky of SKY (measured,
    as the noise step leaves it in ``meta["sky"]``)."""
    truth, p = _params(n, size, seed)
    fine = moffat_psf(size=33, fwhm=9.0)
    model = render_batch(p, torch.full((n,), ZP), torch.as_tensor(np.stack([fine] * n)), (size, size),
                         oversampling=3).numpy()
    rng = np.random.default_rng(seed)
    image = model + SKY + rng.normal(0, NOISE, model.shape)
    cutouts = []
    for i in range(n):
        c = Cutout(id=f"g{i}", image=image[i].astype(np.float64), sigma=np.full((size, size), NOISE),
                   psf=fine.astype(np.float64), mask=np.zeros((size, size), bool), zeropoint=ZP,
                   pixel_scale=0.262, psf_oversampling=3)
        c.meta["sky"] = SkyEstimate(level=SKY, rms=NOISE, n_pixels=size * size)
        cutouts.append(c)
    labels = {f"g{i}": {k: float(v[i]) for k, v in truth.items()} for i in range(n)}
    return cutouts, labels


def test_labelled_cutouts_are_read_as_the_initializer_reads_them():
    cutouts, labels = _oversampled_cutouts()
    items = list(labelled_items(cutouts, labels))
    batch = collate(items)
    assert batch["oversampling"].tolist() == [3.0] * 4
    assert batch["psf_includes_pixel"].all()
    # the same arrays as inference's stacking: sky removed, PSF as given
    s = stack_cutouts(cutouts, "cpu")
    np.testing.assert_array_equal(batch["image"].numpy(), s["image"].numpy())
    np.testing.assert_array_equal(batch["psf"].numpy(), s["psf"].numpy())
    module = build_module(**TINY)
    inputs, target = module.prepare(batch)
    # network inputs in image pixels: FWHM 3 px, not the PSF's own 9
    assert torch.allclose(inputs.psf_fwhm, torch.full((4,), 3.0), rtol=0.15)
    # the labels' own model fits the data: the loss renders the PSF at its sampling
    c = chi2_nu(target, inputs)
    assert torch.all((c > 0.8) & (c < 1.25)), c


def _write_real(folder: Path, n=4, size=48, seed=5):
    """FITS cutouts with the sky left in and a compact neighbour 15 px from each target, a
    3x-sampled PSF file and a manifest that says so; returns (manifest, label table)."""
    folder.mkdir()
    truth, p = _params(n, size, seed)
    nb = {"x": p["x"] + 15.0, "y": p["y"] + 4.0, "mag": torch.full((n,), 19.0), "r_e": torch.full((n,), 1.5),
          "n": torch.full((n,), 1.0), "q": torch.full((n,), 0.8), "pa": torch.zeros(n)}
    fine = moffat_psf(size=33, fwhm=9.0)
    psfs = torch.as_tensor(np.stack([fine] * n))
    zp = torch.full((n,), ZP)
    image = (render_batch(p, zp, psfs, (size, size), oversampling=3)
             + render_batch(nb, zp, psfs, (size, size), oversampling=3)).numpy()
    image = image + SKY + np.random.default_rng(seed).normal(0, NOISE, image.shape)
    fits.PrimaryHDU(fine).writeto(folder / "psf.fits")
    rows = []
    for i in range(n):
        fits.PrimaryHDU(image[i].astype(np.float32)).writeto(folder / f"g{i}.fits")
        rows.append((f"g{i}", f"g{i}.fits", "psf.fits", 3, ZP, 0.262))
    manifest = folder / "manifest.ecsv"
    Table(rows=rows, names=["id", "image", "psf", "psf_oversampling", "zeropoint", "pixel_scale"]
          ).write(manifest, format="ascii.ecsv")
    labels = Table({"id": [f"g{i}" for i in range(n)], "flags": np.zeros(n, int),
                    **{f"sersic_{k}": np.asarray(v) for k, v in truth.items()}})
    neighbour_pixel = [(int(round(float(nb["y"][i]))), int(round(float(nb["x"][i])))) for i in range(n)]
    return manifest, labels, neighbour_pixel


def test_fine_tuning_prepares_real_cutouts_as_run_does(tmp_path):
    manifest, labels, neighbour_pixel = _write_real(tmp_path / "real")
    labels.write(tmp_path / "labels.ecsv", format="ascii.ecsv")
    dm = build_datamodule(None, None, batch_size=4, real=str(manifest), labels=tmp_path / "labels.ecsv",
                          real_options={"mask": "sep", "workers": 0}, real_cache=tmp_path / "items")
    dm.setup()
    items = sorted(dm.train_set, key=lambda it: it["id"])
    assert [it["id"] for it in items] == ["g0", "g1", "g2", "g3"]
    for it, (r, c) in zip(items, neighbour_pixel):
        assert it["psf_oversampling"] == 3.0
        assert bool(it["mask"][r, c]), f"{it['id']}: the neighbour is not hidden"
        corner = it["image"][:8, :8][~it["mask"][:8, :8]]
        assert abs(float(corner.median())) < 0.05 * SKY, "the measured sky was not removed"
    module = build_module(**TINY)
    inputs, target = module.prepare(collate(items))
    c = chi2_nu(target, inputs)
    assert torch.all((c > 0.8) & (c < 1.3)), c


def test_a_bad_real_cutout_is_left_out_with_a_warning(tmp_path):
    manifest, labels, _ = _write_real(tmp_path / "real")
    (tmp_path / "real" / "g2.fits").write_bytes(b"not a FITS file")
    with pytest.warns(UserWarning, match=r"1 real cutout\(s\) left out.*g2"):
        dm = build_datamodule(None, None, batch_size=4, real=str(manifest), labels=labels,
                              real_options={"mask": "sep", "workers": 0}, real_cache=tmp_path / "items")
        dm.setup()
    assert sorted(it["id"] for it in dm.train_set) == ["g0", "g1", "g3"]


def test_train_prepares_real_cutouts_with_the_labelling_run_settings(tmp_path):
    from galmoss_auto.pipelines.train import real_run_options
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"config": {
        "mask": "sep", "sky": "tilted", "survey": "hsc", "band": "i", "zeropoint": 27.0,
        "weights": ["automask=x.safetensors"], "out": "elsewhere", "panels": 3}}))
    opts = SimpleNamespace(labels=str(run_dir / "catalog.fits"), survey="sdss", band="r")
    got = real_run_options(opts)
    assert got == {"mask": "sep", "sky": "tilted", "survey": "hsc", "band": "i", "zeropoint": 27.0,
                   "weights": ("automask=x.safetensors",)}
    opts = SimpleNamespace(labels=str(tmp_path / "mine.ecsv"), survey="sdss", band="r")
    assert real_run_options(opts) == {"survey": "sdss", "band": "r"}


def test_automask_real_instances_read_any_run_input_and_the_psf_in_image_pixels(tmp_path):
    """The masker's real items come through run's reader too (the manifest's 3x-sampled PSF
    read in image pixels): the compact neighbour is a galaxy, not a star.  Read at its own
    sampling the PSF looked 3x wider than the neighbour and made it a star."""
    from galmoss_auto.automask.lightning import real_instances
    from galmoss_auto.automask.maskrcnn import CENTRAL, GALAXY

    manifest, labels, neighbour_pixel = _write_real(tmp_path / "real")
    labels.write(tmp_path / "labels.ecsv", format="ascii.ecsv")
    items = real_instances(str(manifest), tmp_path / "labels.ecsv", options={"workers": 0})
    assert sorted(t["id"] for _, t in items) == ["g0", "g1", "g2", "g3"]
    for z, t in sorted(items, key=lambda it: it[1]["id"]):
        r, c = neighbour_pixel[int(t["id"][1:])]
        assert z.shape == (1, 48, 48)
        assert (t["labels"] == CENTRAL).sum() == 1
        on = [int(k) for k, m in zip(t["labels"], t["masks"]) if m[r, c]]
        assert on == [GALAXY], (t["id"], on)


def test_labels_are_fits_without_a_quality_flag():
    """Real cutouts without a sigma map are all SIGMA_ESTIMATED: such fits are labels, fits at
    a bound or off-centre are not."""
    from galmoss_auto.fitting.flags import Flag, is_clean_fit
    from galmoss_auto.initnet.data import labels_from_catalog
    flags = [0, Flag.SIGMA_ESTIMATED | Flag.WEIGHTS_MISMATCH, Flag.AT_BOUND | Flag.SIGMA_ESTIMATED,
             Flag.NOT_CONVERGED, Flag.CENTRE_OFFSET, Flag.NEIGHBOUR_AT_BOUND]
    assert is_clean_fit(flags).tolist() == [True, True, False, False, False, True]
    assert is_clean_fit(int(Flag.SIGMA_ESTIMATED)) is True
    table = Table({"id": [f"g{i}" for i in range(6)], "flags": np.array([int(f) for f in flags]),
                   **{f"sersic_{k}": np.full(6, 2.0) for k in ("x", "y", "mag", "r_e", "n", "q", "pa")}})
    assert sorted(labels_from_catalog(table)) == ["g0", "g1", "g5"]


def test_train_prepares_real_cutouts_once_into_the_zoo_and_streams_them(tmp_path, capsys):
    """``train --real --labels`` writes the prepared cutouts to ZOO/data/real-<stage>/ and
    reuses them while the inputs are unchanged; a changed label catalog prepares them again;
    unusable real cutouts stop it before training, with a message that names them."""
    pytest.importorskip("galsim")
    from galmoss_auto.data_scripts.item_store import StoredItems, read_index
    from galmoss_auto.pipelines import train

    manifest, labels, _ = _write_real(tmp_path / "real")
    labels.write(tmp_path / "labels.ecsv", format="ascii.ecsv")
    zoo = tmp_path / "zoo"
    common = ["--survey", "sdss", "--band", "r", "--stage", "initnet", "--n-train", "8", "--n-val", "8",
              "--epochs", "1", "--batch-size", "4", "--size", "48", "--no-progress", "--out", str(zoo),
              "--real", str(manifest), "--labels", str(tmp_path / "labels.ecsv")]
    assert train.main(common) == 0
    store = zoo / "data" / "real-initnet"
    index = read_index(store / "train")
    assert index["n"] == 4 and read_index(store / "val")["n"] == 0      # < 10 labels: none held out
    assert sorted(it["id"] for it in StoredItems(store / "train")) == ["g0", "g1", "g2", "g3"]
    written = (store / "train" / "index.json").stat().st_mtime_ns
    assert train.main(common + ["--overwrite"]) == 0
    assert (store / "train" / "index.json").stat().st_mtime_ns == written      # reused
    labels[:3].write(tmp_path / "labels.ecsv", format="ascii.ecsv", overwrite=True)
    assert train.main(common + ["--overwrite"]) == 0
    assert read_index(store / "train")["n"] == 3                                # prepared again
    bad = [a if a != str(manifest) else str(tmp_path / "nosuch.ecsv") for a in common]
    assert train.main(bad + ["--overwrite"]) == 2
    assert "nosuch.ecsv" in capsys.readouterr().err
    Table({"id": ["x1"], "flags": [0], **{f"sersic_{k}": [1.0] for k in "x y mag r_e n q pa".split()}}
          ).write(tmp_path / "other.ecsv", format="ascii.ecsv")
    other = [a if a != str(tmp_path / "labels.ecsv") else str(tmp_path / "other.ecsv") for a in common]
    assert train.main(other + ["--overwrite"]) == 2
    assert "no cutout has a label" in capsys.readouterr().err
