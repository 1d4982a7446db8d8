"""fit_with_neighbours(centred=True), as run fits: a target fitted off the cutout centre trades
places with the fitted neighbour at the centre (CENTRE_SWAPPED), or is flagged CENTRE_OFFSET."""

import numpy as np
import pytest

from galmoss_auto.fitting import Cutout
from galmoss_auto.fitting.flags import Flag
from galmoss_auto.fitting.model import Model, Tie
from galmoss_auto.fitting.neighbours import _swap_flags, centre_tolerance, fit_with_neighbours
from galmoss_auto.fitting.profiles import Sersic

SHAPE = (48, 48)
CENTRE = 24.5  # 1-based centre of a 48-px side
FAINT = {"x": CENTRE, "y": CENTRE, "flux": 400.0, "r_e": 2.0}
BRIGHT = {"x": CENTRE + 9.0, "y": CENTRE + 1.0, "flux": 8000.0, "r_e": 4.0}
ZP = 25.0


def _disc(g):
    """An exponential disc (n = 1, round), 1-based centre, integrated flux ``flux``."""
    yy, xx = np.indices(SHAPE, dtype=float) + 1.0
    img = np.exp(-1.678 * np.hypot(xx - g["x"], yy - g["y"]) / g["r_e"])
    return g["flux"] * img / img.sum()


def _mag(flux):
    return ZP - 2.5 * np.log10(flux)


def _cutout(with_faint=True, seed=1):
    rng = np.random.default_rng(seed)
    image = _disc(BRIGHT) + (_disc(FAINT) if with_faint else 0.0) + rng.normal(0.0, 1.0, SHAPE)
    return Cutout(id=f"c{seed}", image=image.astype(np.float32), sigma=np.ones(SHAPE, np.float32),
                  zeropoint=ZP, pixel_scale=0.2)


def _start(g):
    return {"sersic_x": [g["x"]], "sersic_y": [g["y"]], "sersic_mag": [_mag(g["flux"])],
            "sersic_r_e": [g["r_e"]], "sersic_n": [1.0], "sersic_q": [0.9], "sersic_pa": [0.0]}


def _neighbour(g):
    return {"kind": "galaxy", "x": g["x"], "y": g["y"], "mag": _mag(g["flux"]), "r_e": g["r_e"], "n": 1.0,
            "q": 0.9, "pa": 0.0}


def test_a_target_fitted_on_a_neighbour_swaps_with_the_neighbour_at_the_centre():
    # the masker's mistake: the bright galaxy 9 px away taken for the target, the faint
    # target at the centre fitted as a neighbour
    cut = _cutout()
    kwargs = {"device": "cpu", "errors": "none"}
    plain, _ = fit_with_neighbours([cut], _start(BRIGHT), [[_neighbour(FAINT)]], **kwargs)
    assert plain["sersic_x"][0] == pytest.approx(BRIGHT["x"], abs=0.3)
    assert not plain["flags"][0] & (Flag.CENTRE_SWAPPED | Flag.CENTRE_OFFSET)

    cat, nb = fit_with_neighbours([cut], _start(BRIGHT), [[_neighbour(FAINT)]], centred=True, **kwargs)
    assert cat["flags"][0] & Flag.CENTRE_SWAPPED and not cat["flags"][0] & Flag.CENTRE_OFFSET
    assert cat["sersic_x"][0] == pytest.approx(FAINT["x"], abs=0.3)
    assert cat["sersic_y"][0] == pytest.approx(FAINT["y"], abs=0.3)
    assert cat["sersic_mag"][0] == pytest.approx(_mag(FAINT["flux"]), abs=0.15)
    assert cat["sersic_r_e_arcsec"][0] == pytest.approx(0.2 * cat["sersic_r_e"][0])
    # the joint fit is the same: the bright galaxy is now the neighbour, with the same flags
    assert nb["x"][0] == pytest.approx(BRIGHT["x"], abs=0.3)
    assert nb["mag"][0] == pytest.approx(plain["sersic_mag"][0], abs=1e-6)
    assert nb["flags"][0] == cat["flags"][0] and nb["origin"][0] == "target"
    assert cat["chi2_nu"][0] == pytest.approx(plain["chi2_nu"][0])


def test_an_off_centre_fit_with_nothing_at_the_centre_is_flagged():
    cut = _cutout(with_faint=False, seed=2)
    cat, nb = fit_with_neighbours([cut], _start(BRIGHT), [[]], centred=True, device="cpu", errors="none")
    assert cat["flags"][0] & Flag.CENTRE_OFFSET and not cat["flags"][0] & Flag.CENTRE_SWAPPED
    assert cat["sersic_x"][0] == pytest.approx(BRIGHT["x"], abs=0.3) and len(nb) == 0
    # a large galaxy in a cutout not centred on it (as archives' example images are) covers the
    # centre with its half-light ellipse: its fit is not off its target
    big = {"x": CENTRE + 8.0, "y": CENTRE - 2.0, "flux": 20000.0, "r_e": 12.0}
    image = _disc(big) + np.random.default_rng(5).normal(0.0, 1.0, SHAPE)
    cut = Cutout(id="big", image=image.astype(np.float32), sigma=np.ones(SHAPE, np.float32), zeropoint=ZP)
    cat, _ = fit_with_neighbours([cut], _start(big), [[]], centred=True, device="cpu", errors="none")
    assert cat["sersic_x"][0] == pytest.approx(big["x"], abs=0.3)
    assert not cat["flags"][0] & (Flag.CENTRE_OFFSET | Flag.CENTRE_SWAPPED)
    # a multi-component target is never swapped with a Sérsic neighbour: flagged instead
    two = Model([Sersic("bulge"), Sersic("disk")], ties=[Tie("disk.x", "bulge.x"), Tie("disk.y", "bulge.y")])
    start = {f"{c}_{p}": v for c in ("bulge", "disk") for p, v in
             (("x", [BRIGHT["x"]]), ("y", [BRIGHT["y"]]), ("mag", [_mag(BRIGHT["flux"]) + 0.7]),
              ("r_e", [BRIGHT["r_e"]]), ("n", [1.0]), ("q", [0.9]), ("pa", [0.0]))}
    cat, _ = fit_with_neighbours([_cutout(seed=3)], start, [[_neighbour(FAINT)]], two, centred=True,
                                 device="cpu", errors="none")
    assert cat["flags"][0] & Flag.CENTRE_OFFSET and not cat["flags"][0] & Flag.CENTRE_SWAPPED


def test_a_target_at_the_centre_is_left_alone():
    cut = _cutout(seed=4)
    # the faint target fitted as the target, the bright one as its neighbour: nothing to do
    cat, nb = fit_with_neighbours([cut], _start(FAINT), [[_neighbour(BRIGHT)]], centred=True, device="cpu",
                                  errors="none")
    assert not cat["flags"][0] & (Flag.CENTRE_SWAPPED | Flag.CENTRE_OFFSET)
    assert cat["sersic_x"][0] == pytest.approx(FAINT["x"], abs=0.3)
    assert nb["x"][0] == pytest.approx(BRIGHT["x"], abs=0.3)


def test_tolerance_and_bound_flags():
    # max(5 px, 1 PSF FWHM): 5 px without a PSF (2 px assumed), the FWHM for a wide PSF
    assert centre_tolerance(_cutout()) == 5.0
    yy, xx = np.indices((31, 31))
    wide = np.exp(-((xx - 15) ** 2 + (yy - 15) ** 2) / (2 * 3.0 ** 2))
    cut = Cutout(id="w", image=np.zeros(SHAPE, np.float32), psf=wide / wide.sum())
    assert centre_tolerance(cut) == pytest.approx(2.355 * 3.0, rel=0.1)
    # the bound flags follow the components they belong to
    swapped = _swap_flags(int(Flag.AT_BOUND | Flag.SIGMA_ESTIMATED), others=False)
    assert swapped == int(Flag.NEIGHBOUR_AT_BOUND | Flag.SIGMA_ESTIMATED | Flag.CENTRE_SWAPPED)
    assert _swap_flags(int(Flag.NEIGHBOUR_AT_BOUND), others=False) == int(Flag.AT_BOUND | Flag.CENTRE_SWAPPED)
    assert _swap_flags(int(Flag.NEIGHBOUR_AT_BOUND), others=True) == int(
        Flag.AT_BOUND | Flag.NEIGHBOUR_AT_BOUND | Flag.CENTRE_SWAPPED)


def test_cli_fit_centred(tmp_path):
    from astropy.io import fits
    from astropy.table import Table

    from galmoss_auto.fitting.cli_fit import main

    cut = _cutout(seed=6)
    fits.writeto(tmp_path / "g.fits", cut.image)
    fits.writeto(tmp_path / "g_sigma.fits", cut.sigma)
    Table({"id": ["g"], "image": ["g.fits"], "sigma": ["g_sigma.fits"], "zeropoint": [ZP]}).write(tmp_path / "m.ecsv")
    Table({"id": ["g"], **_start(BRIGHT)}).write(tmp_path / "init.ecsv")
    Table({"id": ["g"], **{k: [v] for k, v in _neighbour(FAINT).items()}}).write(tmp_path / "nb.ecsv")
    args = ["--manifest", str(tmp_path / "m.ecsv"), "--init", str(tmp_path / "init.ecsv"), "--neighbours",
            str(tmp_path / "nb.ecsv"), "--errors", "none", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "plain")]) == 0
    plain = Table.read(tmp_path / "plain" / "catalog.ecsv")
    assert plain["sersic_x"][0] == pytest.approx(BRIGHT["x"], abs=0.3)
    assert main(args + ["--centred", "--out", str(tmp_path / "centred")]) == 0
    cat = Table.read(tmp_path / "centred" / "catalog.ecsv")
    nb = Table.read(tmp_path / "centred" / "neighbours.ecsv")
    assert cat["flags"][0] & Flag.CENTRE_SWAPPED
    assert cat["sersic_x"][0] == pytest.approx(FAINT["x"], abs=0.3)
    assert nb["x"][0] == pytest.approx(BRIGHT["x"], abs=0.3)


def test_a_faded_neighbour_at_the_centre_never_replaces_the_target():
    from galmoss_auto.fitting.model import default_model
    from galmoss_auto.fitting.neighbours import NEIGHBOUR_PARAMS, _recentre

    cut = _cutout(with_faint=False, seed=7)
    cat, _ = fit_with_neighbours([cut], _start(BRIGHT), [[]], device="cpu", errors="none")
    target_mag = float(cat["sersic_mag"][0])

    def row(mag):
        values = {"x": CENTRE, "y": CENTRE, "mag": mag, "r_e": 2.0, "n": 1.0, "q": 0.9, "pa": 0.0}
        return {"id": "c7", "index": 1, "kind": "galaxy", "origin": "residual", "flags": 0,
                **values, **{p + "_err": np.nan for p in NEIGHBOUR_PARAMS}}

    # a component at the centre that ran to the magnitude bound (flux -> 0) is no object
    faded, rows = _recentre(default_model(), [cut], cat.copy(), [(0, row(60.0))])
    assert faded["flags"][0] & Flag.CENTRE_OFFSET and not faded["flags"][0] & Flag.CENTRE_SWAPPED
    assert rows[0][1]["origin"] == "residual" and faded["sersic_mag"][0] == pytest.approx(target_mag)
    # one 3 mag fainter than the target is a real source: it becomes the target
    real, rows = _recentre(default_model(), [cut], cat.copy(), [(0, row(target_mag + 3.0))])
    assert real["flags"][0] & Flag.CENTRE_SWAPPED
    assert real["sersic_mag"][0] == pytest.approx(target_mag + 3.0) and rows[0][1]["mag"] == pytest.approx(target_mag)


def test_runs_target_stays_near_its_start():
    from galmoss_auto.pipelines.run import TARGET_WINDOW, run_model

    model = run_model(None, "flat")
    assert model.windows == {"sersic": TARGET_WINDOW} and TARGET_WINDOW == 5.0
    cut = _cutout(with_faint=False, seed=2)
    # started 3 px off the galaxy, the windowed target still reaches it
    start = _start(BRIGHT) | {"sersic_x": [BRIGHT["x"] - 3.0], "sersic_y": [BRIGHT["y"] + 2.0]}
    cat, _ = fit_with_neighbours([cut], start, [[]], run_model(None, "none"), device="cpu", errors="none")
    assert cat["sersic_x"][0] == pytest.approx(BRIGHT["x"], abs=0.1) and cat["flags"][0] == 0
    # started on an empty centre 9 px away, it cannot slide onto the galaxy: it stops on the
    # window's edge, flagged, where the unwindowed fit moves and is flagged CENTRE_OFFSET
    cat, _ = fit_with_neighbours([cut], _start(FAINT), [[]], run_model(None, "none"), centred=True, device="cpu",
                                 errors="none")
    assert cat["sersic_x"][0] == pytest.approx(FAINT["x"] + TARGET_WINDOW) and cat["flags"][0] & Flag.AT_BOUND
    free, _ = fit_with_neighbours([cut], _start(FAINT), [[]], centred=True, device="cpu", errors="none")
    assert free["sersic_x"][0] == pytest.approx(BRIGHT["x"], abs=0.1) and free["flags"][0] & Flag.CENTRE_OFFSET
    # a model given to run keeps its own windows; its other positioned components get run's
    assert run_model(Model([Sersic("bulge"), Sersic("bar")], windows={"bar": 2.0}), "flat").windows == \
        {"bulge": TARGET_WINDOW, "bar": 2.0}

