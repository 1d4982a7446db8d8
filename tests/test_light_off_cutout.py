"""LIGHT_OFF_CUTOUT (fitting/coverage.py): a target component whose fitted light lies mostly
beyond its cutout is flagged; its magnitude is an extrapolation."""

import numpy as np
import pytest
import torch

from galmoss_auto.fitting import Cutout, Flag, Model, Sersic, fit
from galmoss_auto.fitting.conventions import to_internal
from galmoss_auto.fitting.coverage import light_on_cutout
from galmoss_auto.fitting.flags import INFORMATIONAL
from galmoss_auto.fitting.problem import FitProblem
from galmoss_auto.pipelines.config import moffat_psf


def _full(model, values: dict, n: int) -> torch.Tensor:
    """Internal (n, P) parameters from catalog values (the same for every row)."""
    cols = []
    for comp, spec in model.params:
        cols.append(to_internal(spec.kind, torch.full((n,), float(values[f"{comp.name}_{spec.name}"]),
                                                      dtype=torch.float64)))
    return torch.stack(cols, 1)


def test_the_fraction_on_the_cutout_follows_the_size_and_the_cutouts_own_pixels():
    rng = np.random.default_rng(0)
    cutouts = [Cutout(str(i), rng.normal(0.0, 1.0, (s, s)), psf=moffat_psf(3.0, 3.0, 15), zeropoint=25.0)
               for i, s in enumerate((48, 48, 48, 24))]
    model = Model([Sersic("sersic")])
    problem = FitProblem(model, cutouts)
    base = dict(sersic_x=24.5, sersic_y=24.5, sersic_mag=16.0, sersic_n=1.0, sersic_q=1.0, sersic_pa=0.0)
    fractions = []
    for r_e in (3.0, 24.0, 300.0):
        full = _full(model, {**base, "sersic_r_e": r_e}, len(cutouts))
        fractions.append(light_on_cutout(problem, full)[:, 0])
    small, half, huge = fractions
    assert small[0] > 0.97                                  # a compact galaxy: all on the cutout
    # r_e = the inscribed circle's radius: half the light inside it, the corners add a little
    assert 0.5 < half[0] < 0.62
    assert huge[0] < 0.02
    # the 24 px cutout (padded to 48 in the batch) counts only its own pixels: the galaxy sits
    # on its corner there, so about a quarter of the light of a compact one
    assert 0.2 < small[3] < 0.3


def test_a_fit_with_its_light_off_the_cutout_is_flagged_and_a_neighbour_is_not_judged():
    rng = np.random.default_rng(1)
    yy, xx = np.indices((48, 48)) - 23.5
    image = 40.0 * np.exp(-np.hypot(xx, yy) / 2.5) + rng.normal(0.0, 1.0, (48, 48))
    cut = Cutout("g", image, sigma=np.ones((48, 48)), psf=moffat_psf(3.0, 3.0, 15), zeropoint=25.0)
    init = dict(sersic_x=[24.5], sersic_y=[24.5], sersic_mag=[18.0], sersic_r_e=[4.0], sersic_n=[1.0],
                sersic_q=[0.9], sersic_pa=[0.0])
    row = fit([cut], init, errors="none")[0]
    assert not row["flags"] & Flag.LIGHT_OFF_CUTOUT
    # the same galaxy with its size held at 200 px: the magnitude is an extrapolation
    held = Model([Sersic("sersic")], fixed={"sersic.r_e": 200.0})
    row = fit([cut], init, model=held, errors="none")[0]
    assert row["flags"] & Flag.LIGHT_OFF_CUTOUT
    assert not Flag.LIGHT_OFF_CUTOUT & INFORMATIONAL           # such a row is not clean
    # a fitted neighbour (auxiliary) with its light off the cutout does not flag the target
    pair = Model([Sersic("sersic"), Sersic("nb")], fixed={"nb.r_e": 200.0, "nb.mag": 22.0},
                 auxiliary=("nb",))
    both = {**init, "nb_x": [5.0], "nb_y": [5.0], "nb_mag": [22.0], "nb_r_e": [200.0], "nb_n": [1.0],
            "nb_q": [0.9], "nb_pa": [0.0]}
    row = fit([cut], both, model=pair, errors="none")[0]
    assert not row["flags"] & Flag.LIGHT_OFF_CUTOUT
