"""The physics-informed loss: one renderer, χ² at the truth, and the χ² gradient reaching the
network (checked by finite differences through the renderer)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from galmoss_auto.fitting import default_model
from galmoss_auto.fitting.problem import FitProblem
from galmoss_auto.fitting.tensor_render import render_batch
from galmoss_auto.initnet.encoding import targets_from_catalog
from galmoss_auto.initnet.inputs import prepare_inputs, stack_cutouts
from galmoss_auto.initnet.loss import InitNetLoss, chi2_nu
from galmoss_auto.initnet.resnet import build_initnet

sys.path.insert(0, str(Path(__file__).parent))
from initnet_helpers import make_galaxies


def _inputs(n=4, size=40, seed=0):
    cutouts, truth, _ = make_galaxies(n=n, size=size, seed=seed)
    s = stack_cutouts(cutouts, "cpu")
    inp = prepare_inputs(s["image"], s["sigma"], s["mask"], s["psf"], s["zeropoint"], s["pixel_scale"],
                         crop=32, aperture=10.0, shapes=s["shapes"])
    t = {k: torch.tensor(v) for k, v in truth.items()}
    target = targets_from_catalog(t["x"], t["y"], t["mag"], t["r_e"], t["n"], t["q"], t["pa"],
                                  inp.origin, inp.centre, inp.mag_ref.double()).float()
    return cutouts, truth, inp, target


def test_render_batch_is_the_fitters_renderer():
    cutouts, truth, _ = make_galaxies(n=3, size=32)
    problem = FitProblem(default_model(), cutouts)
    init = {f"sersic_{k}": v for k, v in truth.items()}
    full = default_model().initial_full(init, cutouts)
    fitter = problem.model_image(full, problem.subset(torch.arange(3))).numpy()
    p = {k: torch.tensor(v, dtype=torch.float32) for k, v in truth.items()}
    p["x"], p["y"], p["pa"] = p["x"] - 1, p["y"] - 1, torch.deg2rad(p["pa"])
    psf = torch.tensor(np.stack([c.psf for c in cutouts]), dtype=torch.float32)
    ours = render_batch(p, torch.full((3,), 25.0), psf, (32, 32)).numpy()
    np.testing.assert_allclose(ours, fitter, rtol=1e-4, atol=1e-6 * fitter.max())


def test_chi2_is_one_at_the_truth_and_larger_elsewhere():
    _, _, inp, target = _inputs(n=6)
    c_true = chi2_nu(target, inp)
    assert torch.all((c_true > 0.8) & (c_true < 1.25)), c_true
    off = target.clone()
    off[:, 3] += 0.15          # r_e 40 % too large
    assert torch.all(chi2_nu(off, inp) > 1.5 * c_true)


def test_chi2_gradient_reaches_the_network_finite_difference():
    torch.manual_seed(0)
    _, _, inp, target = _inputs(n=3)
    net = build_initnet(widths=(8, 8, 16, 16), blocks=(1, 1, 1, 1), hidden=16).double().eval()
    loss = InitNetLoss(lam=1.0, param_weight=0.0)        # χ² term only

    def value():
        mean, log_sigma = net(inp.x.double(), inp.scalars.double())
        return loss(mean, log_sigma, None, inp)[0]

    w = net.head[-1].weight            # the output layer: its gradient comes only through the renderer
    net.zero_grad()
    value().backward()
    grad = w.grad.clone()
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # finite differences on the entries with the largest analytic gradient (r_e and mag rows)
    idx = torch.topk(grad.abs().flatten(), 3).indices
    for flat in idx:
        i, j = divmod(int(flat), w.shape[1])
        h = 1e-3
        with torch.no_grad():
            w[i, j] += h
            up = float(value())
            w[i, j] -= 2 * h
            down = float(value())
            w[i, j] += h
        fd = (up - down) / (2 * h)
        assert abs(fd - float(grad[i, j])) <= 0.05 * abs(fd) + 1e-6, (i, j, fd, float(grad[i, j]))


def test_loss_terms_both_present_and_ablations():
    _, _, inp, target = _inputs(n=4)
    torch.manual_seed(0)
    net = build_initnet(widths=(8, 8, 16, 16), blocks=(1, 1, 1, 1), hidden=16)
    mean, ls = net(inp.x, inp.scalars)
    total, terms = InitNetLoss()(mean, ls, target, inp)
    assert set(terms) == {"nll", "chi2"} and torch.isfinite(total)
    assert abs(float(total.detach()) - float(terms["nll"] + terms["chi2"])) < 1e-5
    assert set(InitNetLoss(lam=0.0)(mean, ls, target, inp)[1]) == {"nll"}
    assert set(InitNetLoss(param_weight=0.0)(mean, ls, None, inp)[1]) == {"chi2"}
    import pytest
    with pytest.raises(ValueError):
        InitNetLoss(lam=0.0, param_weight=0.0)


def test_chi2_is_float32_under_autocast():
    _, _, inp, target = _inputs(n=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c = chi2_nu(target.to(torch.bfloat16), inp)
    assert c.dtype == torch.float32
    np.testing.assert_allclose(c.numpy(), chi2_nu(target, inp).numpy(), rtol=0.05)


def test_mse_mean_loss_does_not_let_sigma_starve_the_mean():
    """mean_loss="mse": the mean's gradient is the same whatever the predicted uncertainty; the
    joint NLL form scales it down as 1/sigma^2 (the failure it replaces)."""
    from galmoss_auto.initnet.loss import huber_sq
    target = torch.tensor([[0.5, -0.5, 0.0, 0.6, 0.2, 0.5, 0.3, 0.4]], dtype=torch.float32)
    grads = {}
    for mode in ("mse", "nll"):
        for ls in (0.0, 3.0):
            mean = torch.zeros(1, 8, requires_grad=True)
            total, _ = InitNetLoss(lam=0.0, mean_loss=mode)(mean, torch.full((1, 8), ls), target, None)
            total.backward()
            grads[mode, ls] = mean.grad.clone()
    assert torch.allclose(grads["mse", 0.0], grads["mse", 3.0])
    assert grads["nll", 3.0].abs().sum() < 0.01 * grads["nll", 0.0].abs().sum()
    r = torch.tensor([0.5, 3.0, 10.0])
    assert torch.allclose(huber_sq(r), torch.tensor([0.125, 4.5, 25.5]))
    with pytest.raises(ValueError, match="mean_loss"):
        InitNetLoss(mean_loss="l1")
