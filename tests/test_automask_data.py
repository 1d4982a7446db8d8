"""Training data of the masker: streamed instance targets, augmentation, real pseudo-labels."""

import numpy as np
import pytest
import torch
from astropy.table import Table

pytest.importorskip("galsim")

from galmoss_auto.automask.lightning import ShardInstances, augment, build_datamodule, real_instances
from galmoss_auto.automask.maskrcnn import CENTRAL


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from galmoss_auto.data_scripts.simulate import simulate
    out = tmp_path_factory.mktemp("amdata")
    simulate("legacy", "r", 6, seed=31, out=out, size=64, workers=1, fits=True, progress=False,
             shard_size=3, artifacts=True)
    return out


def test_targets_follow_the_truth_and_are_seeded(sim):
    train = list(ShardInstances(sim, train=True, seed=4))
    again = list(ShardInstances(sim, train=True, seed=4))
    other = list(ShardInstances(sim, train=True, seed=5))
    assert len(train) == 6
    assert [t["id"] for _, t in train] == [t["id"] for _, t in again]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(train, again))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(train, other))
    for z, t in train:
        assert z.shape == (1, 64, 64) and z.dtype == torch.float32
        n = len(t["labels"])
        assert t["masks"].shape == (n, 64, 64) and t["boxes"].shape == (n, 4)
        # each box encloses its mask
        for box, m in zip(t["boxes"], t["masks"]):
            rows, cols = torch.nonzero(m, as_tuple=True)
            assert box[0] <= cols.min() and box[2] >= cols.max() + 1
    objects = Table.read(sim / "objects.ecsv")
    val = list(ShardInstances(sim, train=False))
    for (_, t) in val:
        o = objects[objects["id"] == t["id"]]
        central = o[o["kind"] == "central"][0]
        assert (CENTRAL in t["labels"].tolist()) == (central["npix"] >= 4)


def test_augment_keeps_maps_aligned(rng):
    image = rng.normal(0, 1, (32, 32)).astype(np.float32)
    seg = np.zeros((32, 32), np.int16)
    seg[3:6, 20:30] = 2
    image[seg == 2] += 100
    sigma = np.ones_like(image)
    for seed in range(6):
        im, sg, sm = augment(image, sigma, seg, np.random.default_rng(seed))
        assert sm.sum() == seg.sum()
        assert im[sm == 2].mean() > 50 and abs(np.median(im[sm == 0])) < 3
        assert sg.min() >= 1.0 and sg.max() <= 2.0 + 1e-6
        assert np.allclose(sg, sg.flat[0])  # a scaled sigma map stays uniform here


def test_real_cutouts_with_labels(sim, tmp_path):
    truth = Table.read(sim / "truth.ecsv")
    labels = Table({"id": truth["id"], "sersic_x": truth["sersic_x"], "sersic_y": truth["sersic_y"],
                    "flags": np.array([0, 0, 0, 0, 0, 8])})
    labels.write(tmp_path / "labels.ecsv", format="ascii.ecsv")
    items = real_instances(sim / "manifest.ecsv", tmp_path / "labels.ecsv")
    assert 1 <= len(items) <= 5  # the flagged row is skipped
    for z, t in items:
        assert (t["labels"] == CENTRAL).sum() == 1
        assert z.shape == (1, 64, 64)
    dm = build_datamodule(sim, None, batch_size=2, real=sim / "manifest.ecsv", labels=tmp_path / "labels.ecsv",
                          real_cache=tmp_path / "items")
    dm.setup()
    assert len(list(dm.train_set)) == 6 + len(items)
    with pytest.raises(ValueError, match="both"):
        build_datamodule(sim, None, real=sim / "manifest.ecsv")


def test_crop_sides_and_centre_crop_keep_the_centre():
    from galmoss_auto.automask.lightning import centre_crop, crop_sides
    assert crop_sides((64, 128)) == (64, 80, 96, 112, 128)
    assert crop_sides((70, 100)) == (80, 96)
    assert crop_sides(None) == ()
    for bad in ((16, 64), (96, 64)):
        with pytest.raises(ValueError, match="crop"):
            crop_sides(bad)
    with pytest.raises(ValueError, match="multiple"):
        crop_sides((65, 70))
    image = np.zeros((128, 128), np.float32)
    image[63:65, 63:65] = 1.0       # the 2x2 block around the centre of an even cutout
    for side in (64, 80, 96, 112, 128, 200):
        (out,) = centre_crop(side, image)
        s = min(side, 128)
        assert out.shape == (s, s)
        c = (s - 1) / 2
        rows, cols = np.nonzero(out)
        assert rows.mean() == c and cols.mean() == c


def test_training_crops_one_side_per_batch(tmp_path_factory):
    from galmoss_auto.data_scripts.simulate import simulate
    out = tmp_path_factory.mktemp("amcrop")
    simulate("sdss", "r", 8, seed=7, out=out, size=96, workers=1, fits=False, progress=False, shard_size=8)
    data = ShardInstances(out, train=True, seed=3, crop=(64, 96), group=4)
    items = list(data)
    sides = [z.shape[-1] for z, _ in items]
    assert sides == [z.shape[-2] for z, _ in items]
    # one side per group of 4 (a batch), each from 64, 80, 96; seeded
    assert len(set(sides[:4])) == 1 and len(set(sides[4:])) == 1
    assert set(sides) <= {64, 80, 96}
    assert sides == [z.shape[-1] for z, _ in ShardInstances(out, train=True, seed=3, crop=(64, 96), group=4)]
    many = {z.shape[-1] for s in range(6) for z, _ in ShardInstances(out, train=True, seed=s, crop=(64, 96), group=4)}
    assert len(many) > 1
    for z, t in items:
        side = z.shape[-1]
        # targets are cut with the image: masks have its shape and the target stays the central
        assert t["masks"].shape[-2:] == (side, side)
        c = int(side // 2)
        central = t["masks"][t["labels"] == CENTRAL]
        assert len(central) == 1 and central[0][c - 1:c + 1, c - 1:c + 1].any()
    # validation cutouts are never cropped
    assert {z.shape[-1] for z, _ in ShardInstances(out, train=False, crop=(64, 96), group=4)} == {96}
