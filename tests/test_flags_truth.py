"""Flags that tell the truth (issue 9, item 6, fitter side): isolation of numerical failures
only, bootstrap replicates independent of batching, model bounds checked."""

import math

import numpy as np
import pytest
import torch

from galmoss_auto.fitting import Cutout, Flag, FlatSky, LMSettings, Model, PointSource, Sersic, api, fit
from galmoss_auto.fitting.api import bootstrap_seed

N = 24
ZP = 25.0
TRUE = dict(sersic_x=12.3, sersic_y=12.8, sersic_mag=17.0, sersic_r_e=3.0, sersic_n=1.5, sersic_q=0.7,
            sersic_pa=20.0)


def _psf():
    r2 = np.add.outer((np.arange(9) - 4.0) ** 2, (np.arange(9) - 4.0) ** 2)
    p = np.exp(-r2 / (2 * 1.2 ** 2))
    return p / p.sum()


def _cutouts(n, seed=0, psf=True):
    """``n`` noisy renders of one Sersic galaxy through the fitter's own renderer."""
    clean = Cutout("t", np.zeros((N, N)), sigma=np.ones((N, N)), psf=_psf() if psf else None, zeropoint=ZP)
    image = api.model_images([clean], {k: np.array([v]) for k, v in TRUE.items()})[0]["model"]
    rng = np.random.default_rng(seed)
    sigma = np.full((N, N), 0.5)
    return [Cutout(f"g{i}", image + rng.normal(0, 0.5, (N, N)), sigma=sigma, psf=_psf() if psf else None,
                   zeropoint=ZP) for i in range(n)]


def _init(n):
    return {k: np.full(n, v * (1.05 if k in ("sersic_r_e", "sersic_n") else 1.0)) for k, v in TRUE.items()}


# -- isolation ------------------------------------------------------------------------------
@pytest.mark.parametrize("exc", [torch.linalg.LinAlgError("singular"), FloatingPointError("overflow"),
                                 api.FitNumericalError("non-finite normal matrix")])
def test_numerical_failure_is_isolated_to_its_galaxy(monkeypatch, exc):
    cuts = _cutouts(4)
    real = api._fit_batch

    def flaky(cutouts, cols, opts):
        if any(c.id == "g1" for c in cutouts):
            raise exc
        return real(cutouts, cols, opts)

    monkeypatch.setattr(api, "_fit_batch", flaky)
    cat = fit(cuts, _init(4), errors="none", batch_size=4)
    assert list(cat["id"]) == ["g0", "g1", "g2", "g3"]
    assert cat["flags"][1] & Flag.FIT_FAILED and np.isnan(cat["sersic_mag"][1])
    assert all(not cat["flags"][i] & Flag.FIT_FAILED and np.isfinite(cat["sersic_mag"][i]) for i in (0, 2, 3))


@pytest.mark.parametrize("exc", [TypeError("unsupported operand"), RuntimeError("CUDA error: an illegal "
                                 "memory access was encountered"), KeyError("sersic_q"), ValueError("bad")])
def test_programming_and_device_errors_propagate(monkeypatch, exc):
    cuts = _cutouts(3)
    calls = []

    def broken(cutouts, cols, opts):
        calls.append(len(cutouts))
        raise exc

    monkeypatch.setattr(api, "_fit_batch", broken)
    with pytest.raises(type(exc)):
        fit(cuts, _init(3), errors="none", batch_size=3)
    assert calls == [3]                          # not retried galaxy by galaxy


def test_out_of_memory_splits_the_batch_then_propagates(monkeypatch):
    cuts = _cutouts(4)
    real = api._fit_batch

    def small_only(cutouts, cols, opts):
        if len(cutouts) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(cutouts, cols, opts)

    monkeypatch.setattr(api, "_fit_batch", small_only)
    cat = fit(cuts, _init(4), errors="none", batch_size=4)
    assert np.all(np.isfinite(cat["sersic_mag"])) and not np.any(cat["flags"] & Flag.FIT_FAILED)

    def never(cutouts, cols, opts):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(api, "_fit_batch", never)
    with pytest.raises(torch.OutOfMemoryError):
        fit(cuts, _init(4), errors="none", batch_size=4)


def test_point_source_without_psf_is_bad_input_not_a_crash():
    cuts = _cutouts(1) + _cutouts(1, seed=1, psf=False)
    cuts[1] = Cutout("nopsf", cuts[1].image, sigma=cuts[1].sigma, zeropoint=ZP)
    model = Model([Sersic("sersic"), PointSource("psf")])
    init = _init(2) | {"psf_x": np.full(2, 12.3), "psf_y": np.full(2, 12.8), "psf_mag": np.full(2, 22.0)}
    cat = fit(cuts, init, model, errors="none")
    assert list(cat["id"]) == ["g0", "nopsf"]
    assert cat["flags"][1] & Flag.BAD_INPUT and np.isnan(cat["sersic_mag"][1])
    assert not cat["flags"][0] & (Flag.BAD_INPUT | Flag.FIT_FAILED)


# -- bootstrap ------------------------------------------------------------------------------
def test_bootstrap_seed_depends_on_seed_and_id_only():
    a = np.random.default_rng(bootstrap_seed(3, "gal-1")).poisson(1.0, 20)
    assert np.array_equal(a, np.random.default_rng(bootstrap_seed(3, "gal-1")).poisson(1.0, 20))
    assert not np.array_equal(a, np.random.default_rng(bootstrap_seed(3, "gal-2")).poisson(1.0, 20))
    assert not np.array_equal(a, np.random.default_rng(bootstrap_seed(4, "gal-1")).poisson(1.0, 20))


def _boot_errors(cuts, bs, seed=9, **kw):
    cat = fit(cuts, _init(len(cuts)), errors="bootstrap", n_bootstrap=4, seed=seed, batch_size=bs, **kw)
    return {str(i): np.array([cat[f"{k}_err"][j] for k in TRUE]) for j, i in enumerate(cat["id"])}


def test_bootstrap_errors_do_not_depend_on_batching():
    """Same galaxies in batches of 1, 2 and all: the same replicates, so the same errors.

    The replicate draws are identical; what remains is float32 rendering rounding (it depends on
    the length of the batch's vectors), amplified by where LM stops within tol_chi2 of the
    minimum: ~0.5 % with the default tolerance, < 0.1 % with a tight one.  Different draws
    (another seed, or the old batch-length seeding) differ by tens of per cent with R = 4.
    """
    cuts = _cutouts(3, seed=5)
    # batch sizes 1, 2 and all (12 // R = 3 galaxies' replicates in one LM batch)
    base = _boot_errors(cuts, 1)
    assert all(np.all(np.isfinite(e)) and np.all(e > 0) for e in base.values())
    for other in (_boot_errors(cuts, 2), _boot_errors(cuts, 12), _boot_errors(cuts[::-1], 12)):
        for gid in base:
            np.testing.assert_allclose(other[gid], base[gid], rtol=2e-2)
    # a tight tolerance leaves only rounding
    tight = LMSettings(tol_chi2=1e-5, tol_chi2_rel=1e-10)
    a, b = _boot_errors(cuts, 1, lm_settings=tight), _boot_errors(cuts, 12, lm_settings=tight)
    for gid in a:
        np.testing.assert_allclose(b[gid], a[gid], rtol=3e-3)
    # another seed draws other replicates: the errors move by far more than the tolerance above
    moved = _boot_errors(cuts, 12, seed=10)
    assert max(np.max(np.abs(moved[g] / base[g] - 1)) for g in base) > 0.1


def test_bootstrap_uses_all_lm_settings(monkeypatch):
    seen = []
    real = api.levenberg_marquardt

    def spy(problem, free, b, settings=LMSettings(), sub_weight=None):
        seen.append((sub_weight is not None, settings))
        return real(problem, free, b, settings, sub_weight=sub_weight)

    monkeypatch.setattr(api, "levenberg_marquardt", spy)
    mine = LMSettings(max_iter=7, lambda_init=0.1, tol_chi2=0.05, stall_window=3)
    fit(_cutouts(1), _init(1), errors="bootstrap", n_bootstrap=3, lm_settings=mine)
    assert [s for rep, s in seen if rep] == [mine]


def test_bootstrap_needs_two_replicates():
    with pytest.raises(ValueError, match="n_bootstrap"):
        fit(_cutouts(1), _init(1), errors="bootstrap", n_bootstrap=1)


# -- model bounds ---------------------------------------------------------------------------
@pytest.mark.parametrize("bounds, words", [
    ({"sersic.n": (5.0, 1.0)}, ["sersic.n", "below upper"]),           # inverted
    ({"sersic.n": (2.0, 2.0)}, ["sersic.n", "below upper"]),           # empty
    ({"sersic.q": (0.2, 1.5)}, ["sersic.q", "upper bound", "1.0"]),   # q <= 1
    ({"sersic.n": (0.0, 4.0)}, ["sersic.n", "lower bound", "0.2"]),   # outside the valid range
    ({"sersic.r_e": (-1.0, 4.0)}, ["sersic.r_e", "lower bound"]),
    ({"sersic.n": (math.nan, 4.0)}, ["sersic.n", "not finite"]),
    ({"sersic.mag": (10.0,)}, ["sersic.mag", "pair"]),
])
def test_bad_model_bounds_are_errors(bounds, words):
    with pytest.raises(ValueError) as exc:
        Model([Sersic("sersic")], bounds=bounds)
    for w in words:
        assert w in str(exc.value)


def test_bad_fixed_value_is_an_error():
    with pytest.raises(ValueError, match=r"sersic\.q.*fixed value.*1\.0"):
        Model([Sersic("sersic")], fixed={"sersic.q": 1.3})


def test_q_upper_bound_is_honoured():
    cuts = _cutouts(1)
    # a q bound below 1 stops the axis swap: the catalog's q stays inside [0.3, 0.5]
    model = Model([Sersic("sersic")], bounds={"sersic.q": (0.3, 0.5)})
    lo, hi = model.internal_bounds(cuts)
    j = model.free_names.index("sersic.q")
    assert math.exp(float(lo[0, j])) == pytest.approx(0.3) and math.exp(float(hi[0, j])) == pytest.approx(0.5)
    row = fit(cuts, _init(1), model, errors="none")[0]
    assert 0.3 - 1e-9 <= row["sersic_q"] <= 0.5 + 1e-9
    assert row["flags"] & Flag.AT_BOUND                # the true q (0.7) is outside
    # the default (and an upper bound of 1) keeps the free swap: q and 1/q are one shape
    lo, hi = Model([Sersic("sersic")], bounds={"sersic.q": (0.3, 1.0)}).internal_bounds(cuts)
    assert math.exp(float(hi[0, j])) == pytest.approx(1 / 0.3)


def test_bounded_length_is_honoured_in_catalog_units():
    # r_e bounded: no axis swap, so the bound holds for the catalog's major-axis r_e
    model = Model([Sersic("sersic"), FlatSky("sky")], bounds={"sersic.r_e": (3.5, 6.0)})
    lo, hi = model.internal_bounds(_cutouts(1))
    j = model.free_names.index("sersic.q")
    assert float(hi[0, j]) == pytest.approx(0.0)
    row = fit(_cutouts(1), _init(1) | {"sky_sky": np.zeros(1)}, model, errors="none")[0]
    assert 3.5 - 1e-6 <= row["sersic_r_e"] <= 6.0 + 1e-6
