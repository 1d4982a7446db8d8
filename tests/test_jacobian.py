"""The analytic Jacobian (fitting/jacobian.py) against central finite differences of the render.

Centres are differentiated as a phase ramp on the rendered spectrum: an exact translation of
the rendered galaxy.  The rendering itself varies slightly with the centre's phase on the fine
grid (period 1/8 px; for a cusp of r_e = 0.8 px, n = 6 the total flux varies by ±0.04%) and
jumps by its own error (< 0.1% of the peak) when the patch's integer origin changes at a
half-pixel.  Finite differences over 1e-3 px magnify both by ~1000 (up to 20% column errors,
the old Jacobian's), so centre columns are checked with central differences over ±1/16 px, which
cancel a period-1/8 ripple exactly.  Every other column is checked with ±1e-2 (internal units):
float32 rounding in the render (~1e-6 of the peak) makes smaller steps noisy, e.g. 10% in the
n column of an n = 8 galaxy at ±1e-3.
"""

import math

import numpy as np
import pytest
import torch

from galmoss_auto.fitting import (Cutout, DeVaucouleurs, Exponential, Gaussian, Model, ModifiedKing, Moffat,
                                  PointSource, Sersic, Tie, TiltedSky, fit)
from galmoss_auto.fitting.problem import FitProblem

ZP = 25.0


def moffat_psf(size=17, fwhm=2.6, beta=3.0, e=0.1):
    """A slightly elongated Moffat PSF (asymmetric kernels catch orientation errors)."""
    y, x = np.mgrid[:size, :size] - size // 2
    alpha = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
    r2 = (x / (1 + e)) ** 2 + (y * (1 + e)) ** 2 + 0.3 * x * y / size
    return (1 + r2 / alpha ** 2) ** (-beta)


def problem_for(model, init, n=40, jacobian="auto"):
    B = len(next(iter(init.values())))
    cutouts = [Cutout(f"g{i}", np.zeros((n, n), np.float32), sigma=np.ones((n, n)), psf=moffat_psf(),
                      zeropoint=ZP) for i in range(B)]
    p = FitProblem(model, cutouts, jacobian=jacobian)
    free, b = model.split(model.initial_full({k: np.asarray(v, float) for k, v in init.items()}, cutouts))
    return p, free, b


def column_errors(p, free, b):
    """Relative L2 error of each analytic column against central differences: (B, F)."""
    idx = torch.arange(free.shape[0])
    sub = p.subset(idx)
    _, J = p.jacobian(free, b, sub)
    errors = torch.empty(free.shape, dtype=torch.float64)
    for j, name in enumerate(p.model.free_names):
        h = 1.0 / 16.0 if name.endswith((".x", ".y")) else 1e-2
        e = torch.zeros_like(free)
        e[:, j] = h
        fd = -(p.residuals(free + e, b, sub) - p.residuals(free - e, b, sub)) / (2 * h)
        errors[:, j] = ((J[..., j] - fd).norm(dim=1) / fd.norm(dim=1).clamp(min=1e-12)).double()
    return errors


def test_sersic_columns_match_finite_differences():
    # compact and extended, cuspy and flat, near-round, flat and q > 1 (axes swapped inside the
    # fit); the third galaxy's y sits on a half-pixel, where the patch origin changes
    n = [0.3, 1.0, 4.0, 8.0, 2.0, 6.0]
    init = dict(sersic_x=[20.3, 19.8, 21.45, 20.0, 18.7, 20.9], sersic_y=[19.6, 20.25, 20.5, 21.1, 19.0, 20.4],
                sersic_mag=[16.0] * 6, sersic_r_e=[1.5, 6.0, 3.0, 8.0, 2.2, 0.8], sersic_n=n,
                sersic_q=[0.3, 0.97, 0.55, 0.8, 1.6, 0.9], sersic_pa=[10.0, 0.0, -60.0, 85.0, 30.0, 140.0])
    p, free, b = problem_for(Model([Sersic("sersic")]), init)
    assert p.analytic
    err = column_errors(p, free, b)
    names = p.model.free_names
    for j, name in enumerate(names):
        bar = 0.015 if name.endswith((".x", ".y")) else 3e-3
        assert err[:, j].max() < bar, (name, err[:, j].numpy())


def test_composite_model_with_ties_fixed_and_generic_profiles():
    """De Vaucouleurs + exponential + Moffat + Gaussian + King + point source + tilted sky, with
    offset and ratio ties and a fixed parameter: the chain rule through the ties is exact, and
    the profiles without closed forms use forward-mode AD."""
    comps = [DeVaucouleurs("bulge"), Exponential("disk"), Moffat("halo"), Gaussian("bar"),
             ModifiedKing("cluster"), PointSource("agn"), TiltedSky("sky")]
    ties = [Tie("disk.x", "bulge.x"), Tie("disk.y", "bulge.y"), Tie("disk.pa", "bulge.pa", offset=20.0),
            Tie("bar.fwhm", "disk.r_s", ratio=1.5), Tie("agn.x", "bulge.x"),
            Tie("agn.y", "bulge.y")]
    model = Model(comps, ties=ties, fixed={"halo.beta": 2.5})
    init = dict(bulge_x=[20.4, 19.7], bulge_y=[19.8, 20.6], bulge_mag=[17.0, 16.5], bulge_r_e=[2.0, 3.0],
                bulge_q=[0.8, 0.7], bulge_pa=[30.0, -20.0], disk_mag=[16.0, 16.2], disk_r_s=[5.0, 4.0],
                disk_q=[0.4, 0.5], halo_x=[12.2, 25.5], halo_y=[26.1, 14.3], halo_mag=[18.0, 18.5],
                halo_fwhm=[3.0, 4.0], halo_beta=[2.5, 2.5], halo_q=[0.9, 0.6], halo_pa=[0.0, 45.0],
                bar_x=[20.0, 20.6], bar_y=[20.0, 19.4], bar_mag=[18.0, 18.0], bar_q=[0.3, 0.35],
                bar_pa=[70.0, 60.0], cluster_x=[28.3, 10.6], cluster_y=[10.4, 27.7], cluster_mag=[19.0, 19.0],
                cluster_r_c=[1.5, 2.0], cluster_r_t=[60.0, 80.0], cluster_alpha=[2.0, 1.5],
                cluster_q=[0.7, 0.6], cluster_pa=[10.0, 20.0], agn_mag=[18.0, 19.0], sky_sky=[1.0, 2.0],
                sky_dsky_dx=[0.01, -0.02], sky_dsky_dy=[0.0, 0.03])
    p, free, b = problem_for(model, init)
    assert p.analytic and p.free_from_wrt is not None
    err = column_errors(p, free, b)
    for j, name in enumerate(model.free_names):
        bar = 0.015 if name.endswith((".x", ".y")) else 3e-3
        assert err[:, j].max() < bar, (name, err[:, j].numpy())


def test_fits_with_analytic_and_fd_jacobians_agree():
    rng = np.random.default_rng(3)
    truth = dict(sersic_x=[20.6], sersic_y=[19.3], sersic_mag=[15.5], sersic_r_e=[3.0], sersic_n=[2.0],
                 sersic_q=[0.6], sersic_pa=[25.0])
    p, free, b = problem_for(Model([Sersic("sersic")]), truth)
    clean = p.model_image(p.model.expand(free, b), p.subset(torch.arange(1)))[0].numpy() + 20.0
    sigma = np.sqrt(clean)
    data = clean - 20.0 + rng.normal(size=clean.shape) * sigma
    cut = [Cutout("g", data, sigma=sigma, psf=moffat_psf(), zeropoint=ZP)]
    start = {k: np.asarray(v) * 1.0 for k, v in truth.items()}
    start.update(sersic_r_e=[4.0], sersic_n=[1.0], sersic_x=[21.0], sersic_q=[0.8])
    a = fit(cut, start, jacobian="analytic")
    f = fit(cut, start, jacobian="fd")
    assert a["flags"][0] == 0 and f["flags"][0] == 0
    for k in truth:
        assert abs(a[k][0] - f[k][0]) < 0.05 * f[f"{k}_err"][0], k
        assert a[f"{k}_err"][0] == pytest.approx(f[f"{k}_err"][0], rel=0.02), k


def test_analytic_jacobian_needs_a_psf_and_no_boxiness():
    init = dict(sersic_x=[20.0], sersic_y=[20.0], sersic_mag=[16.0], sersic_r_e=[3.0], sersic_n=[2.0],
                sersic_q=[0.7], sersic_pa=[0.0], sersic_c0=[0.3])
    boxy = Model([Sersic("sersic", boxy=True)])
    p, _, _ = problem_for(boxy, init)
    assert not p.analytic                      # auto falls back to forward differences
    with pytest.raises(ValueError, match="boxy"):
        problem_for(boxy, init, jacobian="analytic")
    cut = [Cutout("g", np.zeros((30, 30), np.float32), sigma=np.ones((30, 30)), zeropoint=ZP)]
    assert not FitProblem(Model([Sersic("sersic")]), cut).analytic
    with pytest.raises(ValueError, match="jacobian must be"):
        FitProblem(Model([Sersic("sersic")]), cut, jacobian="exact")


@pytest.mark.gpu
def test_cuda_jacobian_matches_cpu():
    """The same analytic Jacobian on a GPU (no GalSim needed, so it runs on a bare GPU box)."""
    init = dict(sersic_x=[20.3, 19.8], sersic_y=[19.6, 20.5], sersic_mag=[16.0, 15.0], sersic_r_e=[1.5, 6.0],
                sersic_n=[0.8, 4.0], sersic_q=[0.4, 0.9], sersic_pa=[10.0, -50.0])
    model = Model([Sersic("sersic")])
    p, free, b = problem_for(model, init)
    _, J = p.jacobian(free, b, p.subset(torch.arange(2)))
    g = FitProblem(model, p.cutouts, device="cuda")
    _, Jg = g.jacobian(free.cuda(), b.cuda(), g.subset(torch.arange(2, device="cuda")))
    rel = (Jg.cpu() - J).norm(dim=1) / J.norm(dim=1)
    assert rel.max() < 1e-4, rel
