"""The learned batch masker: masks vs neighbours, sep fallbacks and flags, batch == one-by-one,
checkpoint save -> load -> identical predictions (tiny 64 px cutouts, random or stub networks)."""

import numpy as np
import pytest
import torch
from torch import nn

from galmoss_auto.automask.base import MASKERS, get_masker
from galmoss_auto.automask.maskrcnn import ARTEFACT, CENTRAL, GALAXY, STAR
from galmoss_auto.automask.predict import MaskRCNNMasker, instance_params
from galmoss_auto.automask.sep_masker import SepMasker
from galmoss_auto.fitting import Cutout, Flag
from galmoss_auto.fitting.cutout import psf_fwhm_px
from galmoss_auto.fitting.flags import is_clean_fit

SIZE = 64


def _psf(fwhm=3.0, n=15):
    yy, xx = np.indices((n, n)) - n // 2
    p = np.exp(-(xx ** 2 + yy ** 2) / (2 * (fwhm / 2.3548) ** 2))
    return p / p.sum()


def _blob(x, y, flux, r, q=1.0, size=SIZE):
    yy, xx = np.indices((size, size), dtype=float)
    rr = np.hypot(xx - x, (yy - y) / q)
    prof = np.exp(-rr / r)
    return flux * prof / prof.sum()


def _cutout(gid="a", seed=0, with_sky=False):
    rng = np.random.default_rng(seed)
    img = _blob(31.5, 31.5, 3000, 3.0, 0.7) + _blob(44, 36, 800, 2.0) + _blob(8, 52, 300, 0.7)
    img = img + rng.normal(0, 1, img.shape)
    meta = {}
    if with_sky:
        from galmoss_auto.automask.detect import SkyEstimate
        meta["sky"] = SkyEstimate(level=0.0, rms=1.0, n_pixels=100)
    return Cutout(id=gid, image=img, sigma=np.ones_like(img), psf=_psf(), zeropoint=25.0, meta=meta)


class StubNet(nn.Module):
    """Returns fixed detections: a central, an overlapping galaxy, a far star, a cosmic ray."""

    def __init__(self, fail=False, empty=False, central_label=CENTRAL):
        super().__init__()
        self.fail, self.empty, self.central_label = fail, empty, central_label
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, images):
        if self.fail:
            raise RuntimeError("simulated network failure")
        yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")

        def disk(x, y, r):
            return ((xx - x) ** 2 + (yy - y) ** 2 <= r * r).float()

        masks = torch.stack([disk(31.5, 31.5, 9), disk(44, 36, 5), disk(8, 52, 3),
                             ((yy == 5) & (xx > 40) & (xx < 50)).float()])[:, None]
        labels = torch.tensor([self.central_label, GALAXY, STAR, ARTEFACT])
        scores = torch.tensor([0.99, 0.9, 0.8, 0.7])
        if self.empty:
            masks, labels, scores = masks[:0], labels[:0], scores[:0]
        out = {"boxes": torch.zeros(len(labels), 4), "labels": labels, "scores": scores, "masks": masks}
        return [dict(out) for _ in images]


def test_masks_far_sources_and_models_overlapping_ones():
    c = _cutout()
    res = MaskRCNNMasker(network=StubNet()).mask_batch([c], torch.device("cpu"))[0]
    assert res.method == "maskrcnn" and res.flags == 0
    # the overlapping galaxy is a neighbour, started near its true position and flux
    assert len(res.neighbours) == 1
    nb = res.neighbours[0]
    assert nb.kind == "galaxy"
    assert abs(nb.params["x"] - 45) < 1 and abs(nb.params["y"] - 37) < 1  # 1-based
    assert 25 - 2.5 * np.log10(800) - 0.3 < nb.params["mag"] < 25 - 2.5 * np.log10(800) + 1.0
    assert 0.5 <= nb.params["r_e"] < 6 and 0.1 <= nb.params["q"] <= 1 and -90 < nb.params["pa"] <= 90
    # the far star is masked with a margin; the neighbour and the central are not masked
    assert res.mask[51, 7] and res.mask[51, 12]  # star centre and its grown edge (r 3 + margin 3)
    assert not res.mask[36, 44] and not res.mask[31, 31]
    # the cosmic ray is masked (grown by 1 px)
    assert res.mask[5, 45] and res.mask[6, 45]
    assert res.columns["mask_n_neighbours"] == 1 and res.columns["mask_n_objects"] == 4
    assert res.columns["mask_central_class"] == "central"


@pytest.mark.parametrize("label, name", [(GALAXY, "galaxy"), (STAR, "star")])
def test_a_target_called_galaxy_or_star_is_still_the_central(label, name):
    # a small galaxy under a wide PSF (SDSS) may be called a star: it is still the target, fitted
    # with the learned mask, and the catalog says what the network called it
    res = MaskRCNNMasker(network=StubNet(central_label=label)).mask_batch([_cutout()], "cpu")[0]
    assert res.method == "maskrcnn" and not res.flags & Flag.NO_CENTRAL_DETECTION
    assert res.columns["mask_central_class"] == name
    assert not res.mask[31, 31] and len(res.neighbours) == 1


def test_max_neighbours_zero_masks_the_neighbour_outside_the_central():
    c = _cutout()
    res = MaskRCNNMasker(network=StubNet(), max_neighbours=0).mask_batch([c], "cpu")[0]
    assert res.neighbours == []
    assert res.mask[36, 44]
    assert not res.mask[31, 31]  # the central's own pixels are never masked


def test_sep_fallback_paths_and_flags():
    c = _cutout()
    sep = SepMasker()(c)
    failed = MaskRCNNMasker(network=StubNet(fail=True)).mask_batch([c, _cutout("b", 1)], "cpu")
    for r in failed:
        assert r.method == "sep" and r.flags & Flag.MASK_FAILED and r.neighbours == []
    assert np.array_equal(failed[0].mask, sep.mask)
    # no central found: sep masks the cutout, MASK_FALLBACK (informational) says so, and sep,
    # which finds this central, adds no NO_CENTRAL_DETECTION: the row is what --mask sep gives
    none = MaskRCNNMasker(network=StubNet(empty=True)).mask_batch([c], "cpu")[0]
    assert none.method == "sep" and none.flags & Flag.MASK_FALLBACK
    assert none.flags == sep.flags | Flag.MASK_FALLBACK and is_clean_fit(none.flags)
    assert not none.flags & (Flag.MASK_FAILED | Flag.NO_CENTRAL_DETECTION)
    assert none.columns["mask_central_class"] == ""
    assert np.array_equal(none.mask, sep.mask)
    # ... while sep's own verdict on a blank cutout (nothing at S/N >= 5) still applies
    blank = Cutout(id="blank", image=np.random.default_rng(0).normal(0, 1, (SIZE, SIZE)),
                   sigma=np.ones((SIZE, SIZE)), psf=_psf(), zeropoint=25.0)
    res = MaskRCNNMasker(network=StubNet(empty=True)).mask_batch([blank], "cpu")[0]
    assert res.flags == SepMasker()(blank).flags | Flag.MASK_FALLBACK
    assert res.flags & Flag.NO_CENTRAL_DETECTION
    assert not is_clean_fit(res.flags)
    # a learned mask that would leave no pixel to fit is not used either
    # (the user masked all but a patch around the far star, which the network masks)
    user = np.ones((SIZE, SIZE), bool)
    user[49:56, 5:12] = False
    full = Cutout(id="full", image=c.image, sigma=c.sigma, psf=c.psf, zeropoint=25.0, mask=user)
    res = MaskRCNNMasker(network=StubNet()).mask_batch([full], "cpu")[0]
    assert res.method == "sep" and res.flags & Flag.MASK_FALLBACK
    assert not np.all(res.mask | user)


def test_registered_and_needs_a_checkpoint():
    assert "maskrcnn" in MASKERS
    with pytest.raises(ValueError, match="checkpoint"):
        get_masker("maskrcnn")
    with pytest.raises(ValueError, match="score_thresh"):
        MaskRCNNMasker(network=StubNet(), score_thresh=1.0)


def test_instance_params_and_psf_fwhm():
    img = _blob(20.0, 30.0, 1000, 2.0, q=0.5)
    p = instance_params(img, img > 1e-3, 25.0, "galaxy")
    assert abs(p["x"] - 21.0) < 0.05 and abs(p["y"] - 31.0) < 0.05
    assert abs(p["mag"] - (25 - 2.5 * np.log10(1000))) < 0.05
    assert p["q"] == pytest.approx(0.5, abs=0.08)
    assert abs(p["pa"]) > 85  # elongated along x: pa 90 (CCW from +y)
    yy, xx = np.indices((64, 64), dtype=float)
    along_y = np.exp(-np.hypot((xx - 20) / 0.5, yy - 30) / 2.0)
    assert abs(instance_params(along_y, along_y > 1e-4, 25.0, "galaxy")["pa"]) < 5
    assert psf_fwhm_px(_psf(3.0, 21)) == pytest.approx(3.0, rel=0.15)


@pytest.fixture(scope="module")
def module():
    from galmoss_auto.automask.lightning import DEFAULTS, build_module
    torch.manual_seed(5)
    # the training defaults' builder options (centre-offset channels, anchors up to 112 px), so
    # that export -> registry JSON -> rebuild is checked with them
    return build_module(arch="slim", size=SIZE, builder={**DEFAULTS["builder"], "detections_per_image": 10,
                                                         "score_thresh": 0.01})


def test_batch_equals_one_by_one(module):
    cut = [_cutout("a", 0), _cutout("b", 1, with_sky=True), _cutout("c", 2)]
    masker = MaskRCNNMasker(network=module.model, score_thresh=0.05)
    batch, details = masker.mask_batch(cut, "cpu", return_details=True)
    assert any(len(d.instances or []) for d in details)  # the comparison is not vacuous
    for c, b, d in zip(cut, batch, details):
        one, d1 = masker.mask_batch([c], "cpu", return_details=True)
        assert np.array_equal(one[0].mask, b.mask) and one[0].flags == b.flags
        assert [n.params for n in one[0].neighbours] == [n.params for n in b.neighbours]
        if d.instances is not None:
            assert np.allclose(d.instances.scores, d1[0].instances.scores, rtol=1e-5, atol=1e-6)
            assert np.array_equal(d.instances.labels, d1[0].instances.labels)


def test_export_load_identical_predictions(module, tmp_path, fp16=True):
    """float16 storage (the shipped form): the loaded masker predicts exactly what the network
    with float16-rounded weights predicts, and reproduces the stored reference outputs."""
    from galmoss_auto.automask.lightning import export, reference_input
    from galmoss_auto.models import build_model, check_reference, load_checkpoint
    from galmoss_auto.automask.maskrcnn import maskrcnn

    ev = {"fp16_central_iou_delta": 0.0 if fp16 else -0.5, "central_iou": 0.5}
    path = export(module, tmp_path, survey="sdss", bands=["r"], training={"command": "test", "seed": 5},
                  evaluation=ev)
    state, entry = load_checkpoint(path, with_reference=False)
    assert entry["stage"] == "automask" and entry["bands"] == ["r"]
    weight = state["backbone.body.stem.0.weight"]
    assert weight.dtype == (torch.float16 if fp16 else torch.float32)
    cut = [_cutout("a", 0), _cutout("b", 1)]
    loaded = MaskRCNNMasker(checkpoint=path, score_thresh=0.05)
    if fp16:
        twin = maskrcnn(**module.builder_kwargs)
        twin.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                              for k, v in module.model.state_dict().items()})
    else:
        twin = module.model
    original = MaskRCNNMasker(network=twin, score_thresh=0.05)
    r1, d1 = loaded.mask_batch(cut, "cpu", return_details=True)
    r2, d2 = original.mask_batch(cut, "cpu", return_details=True)
    for a, b, da, db in zip(r1, r2, d1, d2):
        assert np.array_equal(a.mask, b.mask) and a.flags == b.flags
        if da.instances is not None:
            assert np.array_equal(da.instances.scores, db.instances.scores)
    # the stored reference outputs are reproduced by the loaded network
    state, entry, ref = load_checkpoint(path, with_reference=True)
    net = build_model(entry, {k: v.float() for k, v in state.items()})
    assert check_reference(net, ref) == []
    assert reference_input().shape == ref["input"].shape


def _disk(x, y, r, size=SIZE):
    yy, xx = np.indices((size, size))
    return (xx - x) ** 2 + (yy - y) ** 2 <= r * r


def test_pieces_of_the_central_join_it_and_are_not_neighbours():
    from galmoss_auto.automask.instances import Instances
    from galmoss_auto.automask.predict import central_footprint
    data = _blob(31.5, 31.5, 3000, 3.0) + _blob(46, 31.5, 900, 1.5)
    # 0: the central as the network outlined it (its core only); 1: the same galaxy's wider
    # outline, centred 1 px off (within half a FWHM); 2: an inner part 2 px off (within 0.3
    # radii of the joined footprint, inside it); 3: a real neighbour 14.5 px away, touching it
    masks = np.stack([_disk(31.5, 31.5, 5), _disk(32.5, 31.5, 9), _disk(29.5, 31.5, 4), _disk(46, 31.5, 5)])
    inst = Instances(np.array([CENTRAL, GALAXY, GALAXY, GALAXY]), np.array([0.9, 0.8, 0.7, 0.95]),
                     masks, np.zeros((4, 4)))
    foot, pieces = central_footprint(inst, 0, data, fwhm=3.0)
    assert pieces == {1, 2}
    assert np.array_equal(foot, masks[0] | masks[1] | masks[2])
    # switched off: nothing joins
    foot, pieces = central_footprint(inst, 0, data, fwhm=3.0, piece_distance=0.0)
    assert pieces == set() and np.array_equal(foot, masks[0])
    # a piece must lie mostly inside the footprint: the inner part moved outside is no piece
    masks[2] = _disk(29.5, 38.5, 4)
    assert 2 not in central_footprint(inst, 0, data, fwhm=3.0)[1]


class PieceNet(StubNet):
    """The central, an inner part of the same galaxy (2 px off), and the real neighbour."""

    def forward(self, images):
        out = super().forward(images)[0]
        yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
        piece = (((xx - 33.5) ** 2 + (yy - 31.5) ** 2) <= 25).float()[None, None]
        out = {"boxes": torch.zeros(5, 4), "labels": torch.cat([out["labels"], torch.tensor([GALAXY])]),
               "scores": torch.cat([out["scores"], torch.tensor([0.95])]),
               "masks": torch.cat([out["masks"], piece])}
        return [dict(out) for _ in images]


def test_masker_does_not_fit_a_piece_of_the_central_as_a_neighbour():
    c = _cutout()
    res, details = MaskRCNNMasker(network=PieceNet()).mask_batch([c], "cpu", return_details=True)
    assert [round(n.params["x"]) for n in res[0].neighbours] == [45]      # only the real neighbour
    assert not res[0].mask[31, 31:40].any()
    # without the rules the piece is fitted as a second galaxy at the target's centre
    off = MaskRCNNMasker(network=PieceNet(), piece_distance=0.0, symmetric=0.0).mask_batch([c], "cpu")[0]
    assert sorted(round(n.params["x"]) for n in off.neighbours) == [34, 45]     # 1-based
    with pytest.raises(ValueError, match="piece_distance"):
        MaskRCNNMasker(network=PieceNet(), piece_distance=-1.0)


class TwiceNet(StubNet):
    """The stub's neighbour returned twice more: its core (a small mask inside the first, same
    centre) and a star-class copy; plus a second, real neighbour on the other side."""

    def forward(self, images):
        out = super().forward(images)[0]
        yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
        core = (((xx - 44) ** 2 + (yy - 36) ** 2) <= 4).float()[None, None]
        other = (((xx - 20) ** 2 + (yy - 31) ** 2) <= 16).float()[None, None]
        copy = out["masks"][1:2]
        out = {"boxes": torch.zeros(len(out["labels"]) + 3, 4),
               "labels": torch.cat([out["labels"], torch.tensor([GALAXY, STAR, GALAXY])]),
               "scores": torch.cat([out["scores"], torch.tensor([0.7, 0.6, 0.9])]),
               "masks": torch.cat([out["masks"], core, copy, other])}
        return [dict(out) for _ in images]


def test_a_neighbour_detected_several_times_is_fitted_once():
    c = _cutout()
    c.image = c.image + _blob(20, 31, 900, 1.5).astype(np.float32)
    res = MaskRCNNMasker(network=TwiceNet()).mask_batch([c], "cpu")[0]
    # one component per source: the stub's neighbour (x 45, 1-based) once, and the other one
    assert sorted(round(n.params["x"]) for n in res.neighbours) == [21, 45]
    assert [n.kind for n in sorted(res.neighbours, key=lambda n: n.params["x"])] == ["galaxy", "galaxy"]
    # a cosmic ray on the neighbour's centre is still masked, not merged into the neighbour
    net = TwiceNet()
    base_forward = net.forward

    def with_ray(images):
        out = base_forward(images)[0]
        ray = torch.zeros(1, 1, SIZE, SIZE)
        ray[0, 0, 36, 43:46] = 1.0
        out = {"boxes": torch.zeros(len(out["labels"]) + 1, 4), "labels": torch.cat([out["labels"], torch.tensor([ARTEFACT])]),
               "scores": torch.cat([out["scores"], torch.tensor([0.99])]), "masks": torch.cat([out["masks"], ray])}
        return [dict(out) for _ in images]

    net.forward = with_ray
    rayed = MaskRCNNMasker(network=net).mask_batch([c], "cpu")[0]
    assert sorted(round(n.params["x"]) for n in rayed.neighbours) == [21, 45]
    assert rayed.mask[36, 43:46].all()
    # without the piece test the core comes back as a second galaxy on the same source
    off = MaskRCNNMasker(network=TwiceNet(), piece_distance=0.0, symmetric=0.0).mask_batch([c], "cpu")[0]
    assert sorted(round(n.params["x"]) for n in off.neighbours) == [21, 45, 45]


def test_margins_are_in_image_pixels_for_an_oversampled_psf():
    from dataclasses import replace
    native = _cutout()
    # the same 3 px PSF sampled 3 times finer: the margin and the piece tests use image pixels
    fine = replace(native, psf=_psf(9.0, 45), psf_oversampling=3)
    masker = MaskRCNNMasker(network=StubNet(), margin_fwhm=2.0)
    widths = [psf_fwhm_px(c.psf, c.psf_oversampling) for c in (fine, native)]
    assert masker._margin(widths[0]) == masker._margin(widths[1]) == 6
    a, b = masker.mask_batch([native], "cpu")[0], masker.mask_batch([fine], "cpu")[0]
    assert np.array_equal(a.mask, b.mask) and len(a.neighbours) == len(b.neighbours) == 1


def test_initializer_sees_the_modelled_neighbours_hidden():
    from galmoss_auto.automask.base import initializer_view
    from galmoss_auto.fitting.noise import complete_noise
    from galmoss_auto.initnet.base import InitResult
    from galmoss_auto.pipelines.prepare import BatchStages, Prepared

    c = _cutout(with_sky=True)
    res = MaskRCNNMasker(network=StubNet()).mask_batch([c], "cpu")[0]
    # the neighbour's own pixels, minus the central's footprint, are handed to the initializer
    nb = _disk(44, 36, 5) & ~_disk(31.5, 31.5, 9)
    assert np.array_equal(res.neighbour_pixels, nb)
    view = initializer_view(c, res.neighbour_pixels)
    assert view.mask[36, 44] and not c.mask[36, 44] and not view.mask[31, 31]
    assert initializer_view(c, None) is c

    seen = {}

    class Spy:
        name, batched = "spy", False

        def __call__(self, cutout, detection=None):
            seen["mask"] = cutout.mask.copy()
            return InitResult({"x": 32.5, "y": 32.5, "mag": 18.0, "r_e": 3.0, "n": 1.0, "q": 0.7, "pa": 0.0}, 0, {})

    g = _cutout(with_sky=True)
    complete_noise(g)
    item = Prepared(cutout=g, auto_mask=np.zeros(g.shape, bool), init=None, pending={"mask", "init"})
    masker = MaskRCNNMasker(network=StubNet())
    BatchStages(masker, Spy(), SepMasker(), Spy())([item], "cpu")
    assert len(item.neighbours) == 1
    assert seen["mask"][36, 44] and not item.cutout.mask[36, 44]    # hidden from the init only
    assert not seen["mask"][31, 31]


def test_mirror_test_joins_a_discs_ends_but_not_a_neighbour():
    from galmoss_auto.automask.instances import Instances
    from galmoss_auto.automask.predict import central_footprint, symmetric_fraction
    yy, xx = np.indices((SIZE, SIZE), dtype=float)
    # an edge-on disc along x through the centre, and a real neighbour above it
    disc = 500 * np.exp(-np.hypot((xx - 31.5) / 8.0, (yy - 31.5) / 2.0))
    neighbour = 200 * np.exp(-np.hypot(xx - 40, yy - 38) / 1.5)
    data = disc + neighbour
    middle = (np.abs(xx - 31.5) <= 8) & (np.abs(yy - 31.5) <= 4)
    left = (xx >= 15) & (xx < 23.5) & (np.abs(yy - 31.5) <= 4)        # the disc's two ends,
    right = (xx > 39.5) & (xx <= 48) & (np.abs(yy - 31.5) <= 4)       # touching the middle
    near = _disk(40, 38, 3)                                             # touches the middle too
    assert symmetric_fraction(data, left, (31, 31)) > 0.9
    assert symmetric_fraction(data, near, (31, 31)) < 0.5
    inst = Instances(np.array([CENTRAL, GALAXY, GALAXY, GALAXY]), np.array([0.9, 0.8, 0.8, 0.9]),
                     np.stack([middle, left, right, near]), np.zeros((4, 4)))
    foot, pieces = central_footprint(inst, 0, data, fwhm=3.0, symmetric=0.7)
    assert pieces == {1, 2}
    assert np.array_equal(foot, middle | left | right)
    assert central_footprint(inst, 0, data, fwhm=3.0, symmetric=0.0)[1] == set()
    with pytest.raises(ValueError, match="symmetric"):
        MaskRCNNMasker(network=StubNet(), symmetric=1.5)
