"""Mask R-CNN builders, input normalisation, targets and a Lightning training step (tiny, 64 px)."""

import numpy as np
import pytest
import torch

from galmoss_auto.automask.instances import (average_precision, decode, mask_iou, pick_central,
                                              targets_from_segmentation)
from galmoss_auto.automask.maskrcnn import (CENTRAL, CLASSES, GALAXY, STAR, count_parameters, maskrcnn,
                                             maskrcnn_resnet18)
from galmoss_auto.automask.normalise import normalise, normalise_batch


@pytest.mark.parametrize("size", [64, 96, 128])
def test_builder_native_resolution_shapes(size):
    torch.manual_seed(0)
    net = maskrcnn("slim", score_thresh=0.0).eval()
    with torch.no_grad():
        out = net([torch.randn(1, size, size), torch.randn(1, size, size)])
    assert len(out) == 2
    for o in out:
        n = len(o["boxes"])
        assert o["masks"].shape == (n, 1, size, size)  # native resolution: no resize
        assert o["labels"].shape == (n,) and o["scores"].shape == (n,)
        assert n <= 50
        if n:
            assert float(o["boxes"].max()) <= size and int(o["labels"].max()) < len(CLASSES)


def test_builder_centre_offset_channels():
    from galmoss_auto.automask.maskrcnn import centre_offsets
    off = centre_offsets((4, 6), 2.0)
    assert off.shape == (2, 4, 6)
    assert torch.allclose(off[0, 0], (torch.arange(6.0) - 2.5) / 2) and torch.allclose(off[1, :, 0], (torch.arange(4.0) - 1.5) / 2)
    torch.manual_seed(0)
    net = maskrcnn("slim", score_thresh=0.0, coordinates=64.0).eval()
    assert net.backbone.body.stem[0].in_channels == 3
    # the offsets come from each cutout's own centre, before batch padding
    a, b = torch.randn(1, 64, 64), torch.randn(1, 96, 96)
    batch, _ = net.transform([a, b])
    assert batch.tensors.shape == (2, 3, 96, 96)
    assert torch.equal(batch.tensors[0, 1:, :64, :64], centre_offsets((64, 64), 64.0))
    assert torch.equal(batch.tensors[1, 1:], centre_offsets((96, 96), 64.0))
    assert torch.equal(batch.tensors[0, 0, :64, :64], a[0])
    with torch.no_grad():
        out = net([a, b])
    assert out[1]["masks"].shape[-2:] == (96, 96)
    with pytest.raises(ValueError, match="coordinates"):
        maskrcnn("slim", coordinates=0.0)


def test_builder_sizes_and_arguments():
    slim = maskrcnn("slim")
    assert 1.5e6 < count_parameters(slim) < 2.2e6
    assert slim.backbone.body.stem[0].in_channels == 1
    assert slim.roi_heads.fg_bg_sampler.batch_size_per_image == 64
    assert count_parameters(maskrcnn_resnet18()) > 1e7
    assert maskrcnn("resnet50").backbone.body.conv1.in_channels == 1
    with pytest.raises(ValueError, match="backbone"):
        maskrcnn("vgg")
    with pytest.raises(ValueError, match="score_thresh"):
        maskrcnn(score_thresh=1.5)


def test_normalise_ignores_units_and_pedestal(rng):
    image = rng.normal(0, 1, (48, 48))
    image[20:28, 20:28] += 50
    sigma = np.ones_like(image)
    z = normalise(image, sigma)
    # the same cutout in other units (x 37) with a sky pedestal of 3 sigma left in
    z2 = normalise(37 * image + 3 * 37, 37 * sigma)
    assert np.allclose(z, z2, atol=0.02)
    bad = np.zeros_like(image, bool)
    bad[0, :] = True
    assert np.all(normalise(image, sigma, bad)[0] == 0)
    assert z[24, 24] > 3 and abs(np.median(z)) < 0.05
    with pytest.raises(ValueError, match="B, H, W"):
        normalise_batch(torch.zeros(4, 4), torch.ones(4, 4))


def test_targets_and_metrics():
    seg = np.zeros((32, 32), int)
    seg[10:20, 10:20] = 1
    seg[2:5, 25:28] = 2
    seg[30, 0] = 3  # one pixel: below MIN_PIXELS for a source
    t = targets_from_segmentation(seg, {1: CENTRAL, 2: STAR, 3: GALAXY})
    assert t["labels"].tolist() == [CENTRAL, STAR]
    assert t["boxes"][0].tolist() == [10, 10, 20, 20]
    masks = t["masks"].numpy().astype(bool)
    assert np.allclose(mask_iou(masks, masks), np.eye(2))
    assert average_precision([(np.array([0.9, 0.8]), masks)], [masks]) == pytest.approx(1.0)
    assert average_precision([(np.array([0.9]), masks[1:])], [masks]) == pytest.approx(0.5, abs=0.02)
    out = {"scores": torch.tensor([0.9, 0.7, 0.2]), "labels": torch.tensor([STAR, CENTRAL, GALAXY]),
           "boxes": torch.zeros(3, 4), "masks": torch.from_numpy(np.stack([masks[1], masks[0], masks[0]])[:, None].astype(np.float32))}
    inst = decode(out, score_thresh=0.5)
    assert len(inst) == 2
    assert pick_central(inst, (32, 32)) == 1
    # no central-class detection: a galaxy covering the centre wins over a star covering it,
    # a star covering it over nothing; a star off the centre is never the target
    both = decode({**out, "labels": torch.tensor([STAR, STAR, GALAXY]),
                   "scores": torch.tensor([0.9, 0.8, 0.7])}, score_thresh=0.5)
    assert pick_central(both, (32, 32)) == 2
    assert pick_central(both.select(np.array([0, 1])), (32, 32)) == 1
    assert pick_central(both.select(np.array([0])), (32, 32)) == -1


def _tiny_sim(tmp_path_factory):
    pytest.importorskip("galsim")
    from galmoss_auto.data_scripts.simulate import simulate
    out = tmp_path_factory.mktemp("amsim")
    simulate("sdss", "r", 16, seed=777, out=out, size=64, workers=1, fits=False, progress=False,
             shard_size=8)
    return out


def test_training_step_lowers_loss(tmp_path_factory, tmp_path):
    import lightning as L
    from galmoss_auto.automask.lightning import DEFAULTS, build_datamodule, build_module, collate

    sim = _tiny_sim(tmp_path_factory)
    L.seed_everything(3)
    module = build_module(**{**DEFAULTS, "lr": 3e-3, "warmup_steps": 1, "builder": {"detections_per_image": 10}})
    dm = build_datamodule(sim, sim, batch_size=4, seed=3)
    dm.setup()
    # a fixed batch, without augmentation, to measure the loss on
    from galmoss_auto.automask.lightning import ShardInstances
    items = list(ShardInstances(sim, train=False))[:6]
    images, targets = collate(items)
    targets = [{k: v for k, v in t.items() if k in ("boxes", "labels", "masks")} for t in targets]

    def loss():
        module.model.train()
        torch.manual_seed(0)  # same RoI sampling each time
        with torch.no_grad():
            return float(sum(module.model(images, targets).values()))

    before = loss()
    trainer = L.Trainer(max_steps=6, num_sanity_val_steps=0, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
                        default_root_dir=tmp_path)
    trainer.fit(module, dm)
    after = loss()
    assert after < 0.9 * before
    # validation metrics were computed and logged
    assert "val/central_iou" in trainer.callback_metrics


def test_builder_anchor_sizes():
    from galmoss_auto.automask.maskrcnn import ANCHOR_SIZES, ANCHOR_SIZES_128
    net = maskrcnn("slim", anchor_sizes=ANCHOR_SIZES_128)
    assert net.rpn.anchor_generator.sizes == tuple(tuple(float(v) for v in lv) for lv in ANCHOR_SIZES_128)
    assert maskrcnn("slim").rpn.anchor_generator.sizes == ANCHOR_SIZES
    # lists (as read back from a registry's JSON) work too
    net = maskrcnn("slim", anchor_sizes=[list(lv) for lv in ANCHOR_SIZES_128], coordinates=64.0).eval()
    with torch.no_grad():
        out = net([torch.randn(1, 96, 96)])
    assert out[0]["masks"].shape[-2:] == (96, 96)
    for bad in (((4, 6), (9, 13), (18, 27)), ((4, 6), (9, 13), (18, 27), (80, 40)),
                ((0, 6), (9, 13), (18, 27), (40, 80))):
        with pytest.raises(ValueError, match="anchor_sizes"):
            maskrcnn("slim", anchor_sizes=bad)
