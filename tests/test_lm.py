"""Levenberg–Marquardt's termination and bound handling, on small problems with known answers."""

import math

import pytest
import torch

from galmoss_auto.fitting.lm import LMSettings, levenberg_marquardt


class Scripted:
    """A one-parameter problem whose trial χ² follows a script: each trial render returns the
    next value of ``script(k, chi2_now)``, so accept/reject sequences are exact."""

    def __init__(self, script, chi2_start=100.0):
        self.script, self.k, self.chi2 = script, 0, chi2_start

    def subset(self, idx):
        n = idx.numel()
        return {"lower": torch.full((n, 1), -1e9, dtype=torch.float64),
                "upper": torch.full((n, 1), 1e9, dtype=torch.float64)}

    def jacobian(self, free, b, sub):
        r = torch.full((free.shape[0], 1), math.sqrt(self.chi2), dtype=torch.float64)
        return r, torch.ones((free.shape[0], 1, 1), dtype=torch.float64)

    def residuals(self, free, b, sub):
        chi2 = self.script(self.k, self.chi2)
        self.k += 1
        if chi2 < self.chi2:
            self.chi2 = chi2
        return torch.full((free.shape[0], 1), math.sqrt(chi2), dtype=torch.float64)


def _run(problem, **settings):
    free = torch.zeros((1, 1), dtype=torch.float64)
    return levenberg_marquardt(problem, free, torch.zeros_like(free), LMSettings(**settings))


def test_stall_at_moderate_damping_converges():
    # accepted steps that gain 1e-3 alternate with rejected ones, so λ cycles between 0.1 and 1
    # and never reaches the near-Gauss-Newton tests: only the stall window ends the fit
    def script(k, chi2):
        return chi2 - 1e-3 if k % 2 == 0 else chi2 + 1.0

    _, _, n_iter, converged, _ = _run(Scripted(script), lambda_init=1.0, max_iter=50)
    assert bool(converged) and int(n_iter) == 6   # the first full window of 5
    # without the window (longer than the run) the same fit runs out of iterations
    _, _, n_iter, converged, _ = _run(Scripted(script), lambda_init=1.0, max_iter=50, stall_window=60)
    assert not bool(converged) and int(n_iter) == 50


def test_rejected_steps_alone_are_not_a_stall_nor_convergence():
    # every trial is worse: λ climbs by 10 per step until it passes lambda_max (1e-3 -> 1e7 in
    # 11 steps); a window of rejections must not end the fit earlier, and a fit that never
    # moved from its start is not converged (issue 9: it used to come out with flags 0)
    free, chi2, n_iter, converged, _ = _run(Scripted(lambda k, c: c + 1.0), max_iter=50)
    assert not bool(converged) and int(n_iter) == 11 and float(chi2) == pytest.approx(100.0)
    assert float(free) == 0.0                     # still at the starting value


def test_lambda_exhausted_after_progress_is_converged():
    # two accepted steps, then nothing lowers χ²: λ runs out at a point the fit reached
    def script(k, chi2):
        return chi2 - 10.0 if k < 2 else chi2 + 1.0

    _, chi2, _, converged, _ = _run(Scripted(script), max_iter=50)
    assert bool(converged) and float(chi2) == pytest.approx(80.0)


def test_start_at_the_minimum_converges_without_a_step():
    # zero gradient at the start: the predicted gain is 0 < tol on the first (near Gauss-Newton)
    # step, which is a genuine convergence test even though the trial is rejected
    class AtMinimum(Scripted):
        def jacobian(self, free, b, sub):
            r, J = super().jacobian(free, b, sub)
            return r, torch.zeros_like(J)

    _, _, n_iter, converged, _ = _run(AtMinimum(lambda k, c: c + 1e-6), max_iter=50)
    assert bool(converged) and int(n_iter) == 1


def test_all_rejected_fit_is_flagged_not_converged(monkeypatch):
    # through fit(): a problem whose renders never improve gets NOT_CONVERGED, not flags 0
    import numpy as np

    from galmoss_auto.fitting import Cutout, Flag, api, fit

    rng = np.random.default_rng(0)
    cut = Cutout("g", rng.normal(size=(24, 24)), sigma=np.ones((24, 24)), zeropoint=20.0)
    real = api.FitProblem.residuals

    def worse(self, free, b, sub):             # every trial render 1e3 worse than the start
        r = real(self, free, b, sub)
        return r + 1e3

    monkeypatch.setattr(api.FitProblem, "residuals", worse)
    row = fit([cut], {"sersic_x": [12.5], "sersic_y": [12.5], "sersic_mag": [15.0]}, errors="none")[0]
    assert row["flags"] & Flag.NOT_CONVERGED


class Rosenbrock:
    """Residuals (10 (y - x²), 1 - x) for a batch of (x, y), with box bounds."""

    def __init__(self, lower, upper):
        self.lower = torch.tensor(lower, dtype=torch.float64)
        self.upper = torch.tensor(upper, dtype=torch.float64)

    def subset(self, idx):
        return {"lower": self.lower[idx], "upper": self.upper[idx]}

    @staticmethod
    def _r(p):
        return torch.stack([10.0 * (p[..., 1] - p[..., 0] ** 2), 1.0 - p[..., 0]], -1)

    def residuals(self, free, b, sub):
        return self._r(free)

    def jacobian(self, free, b, sub):
        # residuals are data - model, and LM takes J = d(model)/d(free) = -d(r)/d(free)
        x = free[:, 0]
        dr = torch.zeros(free.shape[0], 2, 2, dtype=free.dtype)
        dr[:, 0, 0], dr[:, 0, 1], dr[:, 1, 0] = -20.0 * x, 10.0, -1.0
        return self._r(free), -dr


def test_bounded_rosenbrock_reaches_the_constrained_minimum():
    # galaxy 0: unbounded minimum (1, 1); galaxy 1: x <= 0.5 cuts it off, the constrained
    # minimum is (0.5, 0.25) with x held at its bound
    prob = Rosenbrock(lower=[[-5.0, -5.0], [-5.0, -5.0]], upper=[[5.0, 5.0], [0.5, 5.0]])
    free0 = torch.tensor([[-1.2, 1.0], [-1.2, 1.0]], dtype=torch.float64)
    free, chi2, n_iter, converged, _ = levenberg_marquardt(prob, free0, torch.zeros_like(free0),
                                                           LMSettings(max_iter=100, tol_chi2=1e-12))
    assert converged.all()
    assert free[0].tolist() == pytest.approx([1.0, 1.0], abs=1e-4)
    assert free[1].tolist() == pytest.approx([0.5, 0.25], abs=1e-4)
    assert float(chi2[1]) == pytest.approx(0.25, abs=1e-6)
