"""initnet network and encoding: shapes, output ranges, coordinate round trips."""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from galmoss_auto.initnet.encoding import (COORDS, natural_from_coords, standardise, targets_from_catalog,
                                           to_catalog, unstandardise, valid_mask)
from galmoss_auto.initnet.inputs import N_CHANNELS, N_SCALARS, prepare_inputs, psf_scalars, stack_cutouts
from galmoss_auto.initnet.resnet import build_initnet

sys.path.insert(0, str(Path(__file__).parent))  # the shared tiny-data helpers beside this file
from initnet_helpers import make_galaxies, moffat_psf


@pytest.mark.parametrize("arch", ["compact", "resnet18"])
def test_network_shapes_and_packed_form(arch):
    torch.manual_seed(0)
    kw = {"widths": (8, 8, 16, 16), "blocks": (1, 1, 1, 1), "hidden": 16} if arch == "compact" else {}
    net = build_initnet(arch, **kw).eval()
    x, s = torch.randn(3, N_CHANNELS, 32, 32), torch.randn(3, N_SCALARS)
    mean, log_sigma = net(x, s)
    assert mean.shape == (3, len(COORDS)) and log_sigma.shape == (3, len(COORDS))
    assert torch.isfinite(mean).all() and (log_sigma >= -7).all() and (log_sigma <= 5).all()
    m2, l2 = net(net.pack(x, s))
    assert torch.equal(mean, m2) and torch.equal(log_sigma, l2)


def test_compact_default_is_small():
    net = build_initnet()
    n = sum(p.numel() for p in net.parameters())
    assert n * 2 < 5e6          # one fp16 file well under 5 MB


def test_unknown_arch_names_the_choices():
    with pytest.raises(ValueError, match="resnet50"):
        build_initnet("vgg")


def test_inputs_centre_crop_and_scalars():
    cutouts, truth, _ = make_galaxies(n=4, size=40)
    s = stack_cutouts(cutouts, "cpu")
    inp = prepare_inputs(s["image"], s["sigma"], s["mask"], s["psf"], s["zeropoint"], s["pixel_scale"],
                         crop=32, aperture=10.0, shapes=s["shapes"])
    assert inp.x.shape == (4, N_CHANNELS, 32, 32) and inp.scalars.shape == (4, N_SCALARS)
    # the detected centre pixel is within 1.5 px of the true centre
    cx = inp.origin[:, 1].numpy() + inp.centre + 1
    cy = inp.origin[:, 0].numpy() + inp.centre + 1
    assert np.all(np.abs(cx - truth["x"]) < 1.5) and np.all(np.abs(cy - truth["y"]) < 1.5)
    # reference magnitude: within 0.5 mag of the truth (aperture flux of a bright galaxy)
    assert np.all(np.abs(inp.mag_ref.numpy() - truth["mag"]) < 0.5)
    fwhm, e1, e2 = psf_scalars(torch.as_tensor(moffat_psf(fwhm=3.0))[None])
    assert abs(float(fwhm) - 3.0) < 0.5 and abs(float(e1)) < 1e-3 and abs(float(e2)) < 1e-3


def test_psf_widths_reach_the_network_in_image_pixels():
    from dataclasses import replace

    from galmoss_auto.fitting.cutout import psf_fwhm_px
    cutouts, _, _ = make_galaxies(n=2, size=40)
    # the same 3.5 px Moffat given at the image's sampling and 3 times finer
    native = [replace(c, psf=moffat_psf(size=21, fwhm=3.5)) for c in cutouts]
    fine = [replace(c, psf=moffat_psf(size=63, fwhm=10.5), psf_oversampling=3) for c in cutouts]
    inputs = []
    for group in (native, fine):
        s = stack_cutouts(group, "cpu")
        inputs.append(prepare_inputs(s["image"], s["sigma"], s["mask"], s["psf"], s["zeropoint"], s["pixel_scale"],
                                     crop=32, aperture=10.0, shapes=s["shapes"], profile=True,
                                     oversampling=s["oversampling"]))
    a, b = inputs
    assert torch.allclose(a.psf_fwhm, b.psf_fwhm, rtol=0.06)
    assert abs(float(a.psf_fwhm[0]) - 3.5) < 0.2 and psf_fwhm_px(fine[0].psf, 3) == pytest.approx(3.5, abs=0.1)
    # the scalars the network reads agree: the basic ten (ln FWHM first) closely, the profile
    # ones to the half-pixel steps in which the native PSF's curve of growth is measured
    assert torch.allclose(a.scalars[:, :N_SCALARS], b.scalars[:, :N_SCALARS], atol=0.02)
    assert torch.allclose(a.scalars, b.scalars, atol=0.2)
    # read in the PSF's own pixels instead, the fine PSF would look 3 times wider
    s = stack_cutouts(fine, "cpu")
    unscaled = prepare_inputs(s["image"], s["sigma"], s["mask"], s["psf"], s["zeropoint"], s["pixel_scale"],
                              crop=32, aperture=10.0, shapes=s["shapes"], profile=True)
    assert float(unscaled.scalars[0, 0] - b.scalars[0, 0]) == pytest.approx(math.log(3.0), abs=0.01)


def test_coordinates_round_trip_to_catalog():
    cutouts, truth, _ = make_galaxies(n=5, size=40)
    origin = torch.tensor([[4, 5]] * 5)
    mag_ref = torch.full((5,), 18.0, dtype=torch.float64)
    t = {k: torch.tensor(v) for k, v in truth.items()}
    coords = targets_from_catalog(t["x"], t["y"], t["mag"], t["r_e"], t["n"], t["q"], t["pa"], origin, 16, mag_ref)
    back = to_catalog(coords, origin, 16, mag_ref)
    for k in ("x", "y", "mag", "r_e", "n", "q"):
        np.testing.assert_allclose(back[k].numpy(), truth[k], rtol=1e-9, atol=1e-9)
    dpa = (back["pa"].numpy() - truth["pa"] + 90) % 180 - 90
    assert np.abs(dpa).max() < 1e-6
    np.testing.assert_allclose(unstandardise(standardise(coords)).numpy(), coords.numpy(), atol=1e-12)
    assert valid_mask(coords, 32).all()
    nat = natural_from_coords(coords, 16, mag_ref)
    np.testing.assert_allclose(nat["x"].numpy(), truth["x"] - 1 - 5, atol=1e-9)


def test_valid_mask_rejects_unphysical_predictions():
    good = torch.tensor([[0.1, -0.2, 0.0, 0.5, 0.1, 0.7, 0.0, 1.0]])
    assert valid_mask(good, 64).all()
    for k, bad in [(0, 40.0), (2, 9.0), (3, 3.0), (4, 1.5), (5, -0.1), (5, 2.0), (1, math.nan)]:
        c = good.clone()
        c[0, k] = bad
        assert not valid_mask(c, 64).any(), (COORDS[k], bad)


def test_centre_pooling_shapes_and_bad_pool():
    torch.manual_seed(0)
    for stem in (1, 2):
        net = build_initnet(widths=(8, 8, 16, 16), blocks=(1, 1, 1, 1), hidden=16, stem_stride=stem,
                            pool="avg+centre").eval()
        mean, log_sigma = net(torch.randn(2, N_CHANNELS, 32, 32), torch.randn(2, N_SCALARS))
        assert mean.shape == (2, len(COORDS)) and torch.isfinite(mean).all()
    with pytest.raises(ValueError, match="avg\\+centre"):
        build_initnet(pool="max")
    with pytest.raises(ValueError, match="stem_stride"):
        build_initnet(stem_stride=3)


def test_residual_baseline_measures_the_galaxy():
    """The residual form's baseline: centroid within 0.35 px, angle within 10 deg for elongated galaxies, r_e within 0.1 dex, the aperture's
    missing light within 0.2 mag and n within a factor 2.5 (small PSF-blurred galaxies: the
    quadrature correction leaves them too round and too little concentrated, for the network
    to correct), and standardise/unstandardise invert each other with it."""
    cutouts, truth, _ = make_galaxies(n=8, size=48, seed=5, noise=0.01)
    s = stack_cutouts(cutouts, "cpu")
    inp = prepare_inputs(s["image"], s["sigma"], s["mask"], s["psf"], s["zeropoint"], s["pixel_scale"],
                         crop=32, aperture=12.0, shapes=s["shapes"])
    t = targets_from_catalog(*(torch.as_tensor(truth[k], dtype=torch.float64) for k in
                               ("x", "y", "mag", "r_e", "n", "q", "pa")),
                             inp.origin, inp.centre, inp.mag_ref.double()).float()
    b = inp.baseline
    assert b.shape == (8, len(COORDS))
    assert torch.all((b[:, :2] - t[:, :2]).abs() < 0.35)
    assert torch.all((b[:, 3] - t[:, 3]).abs() < 0.1)
    assert torch.all((b[:, 2] - t[:, 2]).abs() < 0.2) and torch.all(b[:, 2] < 0)
    assert torch.all((b[:, 4] - t[:, 4]).abs() < math.log10(2.5))
    pa_b = torch.rad2deg(0.5 * torch.atan2(b[:, 7], b[:, 6]))
    dpa = (pa_b - torch.as_tensor(truth["pa"], dtype=torch.float32) + 90) % 180 - 90
    elongated = torch.as_tensor(truth["q"]) < 0.7
    assert elongated.any() and torch.all(dpa[elongated].abs() < 10), dpa
    z = standardise(t, b)
    assert torch.allclose(unstandardise(z, b), t, atol=1e-5)


def test_profile_scalars_follow_the_light_profile():
    """The curve-of-growth scalars (profile=True): 10 more, the first 10 unchanged, the radii
    rising with the enclosed fraction, the PSF's radii relative to the galaxy's, and the more
    concentrated galaxies (higher true n) holding 80 % of their light at a larger multiple of
    r50 (rank correlation of ln(R80 / r50) with n above 0.6; inside r50 the PSF's core
    dominates these small galaxies)."""
    from galmoss_auto.initnet.inputs import N_PROFILE
    cutouts, truth, _ = make_galaxies(n=16, size=48, seed=7, noise=0.005)
    s = stack_cutouts(cutouts, "cpu")
    args = (s["image"], s["sigma"], s["mask"], s["psf"], s["zeropoint"], s["pixel_scale"])
    plain = prepare_inputs(*args, crop=32, aperture=12.0, shapes=s["shapes"])
    prof = prepare_inputs(*args, crop=32, aperture=12.0, shapes=s["shapes"], profile=True)
    assert prof.scalars.shape == (16, N_SCALARS + N_PROFILE)
    assert torch.equal(prof.scalars[:, :N_SCALARS], plain.scalars)
    shape = prof.scalars[:, N_SCALARS:]
    galaxy = torch.cat([shape[:, :4], torch.zeros(16, 1), shape[:, 4:7]], dim=1)   # 0 = ln(r50/r50)
    assert torch.all(galaxy.diff(dim=1) > 0)
    assert torch.all(shape[:, 8] > shape[:, 7])                      # PSF R90 > R50
    assert torch.allclose(shape[:, 9], plain.baseline[:, 4] * math.log(10.0))
    rank = lambda v: torch.argsort(torch.argsort(torch.as_tensor(v, dtype=torch.float64)))
    rho = torch.corrcoef(torch.stack([rank(shape[:, 6]), rank(truth["n"])]).double())[0, 1]
    assert rho > 0.6, rho


def test_gaussian_moments_follow_an_offset_elliptical_galaxy():
    """The baseline's moments: a noiseless elliptical Gaussian (sigma 3 x 1.5 px, major axis at
    30 deg from x) 1.3 px off the crop's centre pixel gives its centroid to 0.06 px and, the
    weight divided out, its second moments to 2 %; the flat window (window_moments) is pulled
    towards the pixel."""
    from galmoss_auto.initnet.inputs import gaussian_moments, window_moments
    C, c = 32, 16
    d = torch.arange(C, dtype=torch.float32) - c
    X, Y = d[None, :] - 1.3, d[:, None] + 0.7
    t = math.radians(30)
    u, v = X * math.cos(t) + Y * math.sin(t), -X * math.sin(t) + Y * math.cos(t)
    img = torch.exp(-0.5 * ((u / 3.0) ** 2 + (v / 1.5) ** 2))[None]
    good = torch.ones_like(img, dtype=torch.bool)
    mx, my, ixx, iyy, ixy = gaussian_moments(img, good, c, torch.tensor([2.5]))
    assert abs(float(mx) - 1.3) < 0.06 and abs(float(my) + 0.7) < 0.06
    a2, b2 = 9.0, 2.25
    want = (a2 * math.cos(t) ** 2 + b2 * math.sin(t) ** 2, a2 * math.sin(t) ** 2 + b2 * math.cos(t) ** 2,
            (a2 - b2) * math.sin(t) * math.cos(t))
    for got, w in zip((ixx, iyy, ixy), want):
        assert abs(float(got) / w - 1) < 0.02, (float(got), w)
    flat = window_moments(img, good, c, torch.tensor([2.5]))
    assert abs(float(flat[0]) - 1.3) > 0.15


def test_compact_wide_is_the_compact_trunk_1_5x_wider():
    torch.manual_seed(0)
    wide = build_initnet("compact-wide", pool="avg+centre")
    torch.manual_seed(0)
    same = build_initnet("compact", widths=(24, 48, 96, 192), pool="avg+centre")
    # the same layers drawn in the same order: a checkpoint trained either way loads in both
    a, b = wide.state_dict(), same.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    n_wide = sum(p.numel() for p in wide.parameters())
    n_compact = sum(p.numel() for p in build_initnet("compact", pool="avg+centre").parameters())
    assert 2.0 < n_wide / n_compact < 2.6
