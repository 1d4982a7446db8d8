"""The bulge + disk starting rule from a single-Sérsic start."""

import numpy as np
import pytest

from galmoss_auto.fitting import DeVaucouleurs, Exponential, FlatSky, Model, PointSource, Sersic
from galmoss_auto.initnet.bulge_disk import bulge_disk_start, bulge_to_total, multi_component_start

SINGLE = {"x": np.array([30.0, 31.0]), "y": np.array([32.0, 29.0]), "mag": np.array([17.0, 18.0]),
          "r_e": np.array([6.0, 3.0]), "n": np.array([1.0, 4.0]), "q": np.array([0.5, 0.8]),
          "pa": np.array([20.0, -40.0])}


def test_flux_is_conserved_and_roles_are_sensible():
    bulge, disk = bulge_disk_start(SINGLE)
    total = 10 ** (-0.4 * bulge["mag"]) + 10 ** (-0.4 * disk["mag"])
    np.testing.assert_allclose(-2.5 * np.log10(total), SINGLE["mag"], atol=1e-12)
    assert np.all(bulge["r_e"] < SINGLE["r_e"]) and np.all(disk["r_e"] > SINGLE["r_e"])
    np.testing.assert_array_equal(disk["n"], 1.0)
    np.testing.assert_array_equal(bulge["n"], [2.0, 4.0])
    assert np.all(bulge["q"] >= SINGLE["q"])
    np.testing.assert_allclose(bulge_to_total([1.0, 4.0, 10.0]), [0.1, 0.7, 0.7])


def test_model_columns_for_named_and_unnamed_components():
    model = Model([Sersic("bulge"), Sersic("disk"), FlatSky("sky")])
    cols = multi_component_start(model, SINGLE)
    assert set(cols) == {f"{c}_{p}" for c in ("bulge", "disk") for p in ("x", "y", "mag", "r_e", "n", "q", "pa")} | {"sky_sky"}
    np.testing.assert_array_equal(cols["disk_n"], 1.0)
    # GALFIT-style unnamed components: devauc is the bulge, expdisk the disk, psf a nucleus
    model = Model([Exponential("c1"), DeVaucouleurs("c2"), PointSource("c3")])
    cols = multi_component_start(model, SINGLE)
    assert np.all(cols["c2_r_e"] < 1.6783 * cols["c1_r_s"])
    np.testing.assert_allclose(cols["c3_mag"], SINGLE["mag"] + 2.5)
    assert "c1_n" not in cols and "c2_n" not in cols


def _blob_cutout(gid, amp, seed, size=41):
    """A round Gaussian galaxy (sigma 2.5 px, peak ``amp``) at the centre of a noisy cutout."""
    from galmoss_auto.fitting.cutout import Cutout
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    c = (size - 1) / 2
    image = amp * np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * 2.5 ** 2)) + rng.normal(0, 1.0, (size, size))
    return Cutout(id=gid, image=image, sigma=np.ones((size, size)), psf=None,
                  mask=np.zeros((size, size), bool), zeropoint=25.0)


def test_complete_starts_fills_only_the_open_values_from_sep():
    from galmoss_auto.fitting.flags import Flag
    from galmoss_auto.initnet.bulge_disk import complete_starts
    from galmoss_auto.initnet.sep_init import SepInitializer
    model = Model([Sersic("bulge"), Exponential("disk"), FlatSky("sky")], fixed={"bulge.n": 4.0})
    cutouts = [_blob_cutout("a", 50.0, 1), _blob_cutout("b", 30.0, 2), _blob_cutout("blank", 0.0, 3)]
    given = {"bulge_x": np.array([19.0, np.nan, np.nan]), "disk_q": np.array([0.3, 0.3, 0.3])}
    cols, flags = complete_starts(model, given, cutouts)
    # what was given stays; the open values come from sep by the rule
    assert cols["bulge_x"][0] == 19.0 and np.all(cols["disk_q"] == 0.3)
    assert given["bulge_x"][1] != given["bulge_x"][1]          # the caller's arrays are untouched
    single = SepInitializer()(cutouts[1]).params
    total = 10 ** (-0.4 * cols["bulge_mag"]) + 10 ** (-0.4 * cols["disk_mag"])
    assert -2.5 * np.log10(total[1]) == pytest.approx(single["mag"], abs=1e-9)
    assert cols["bulge_x"][1] == pytest.approx(single["x"]) and cols["disk_r_s"][1] > 0
    assert "bulge_n" not in cols                               # fixed: the model's value wins
    np.testing.assert_array_equal(cols["sky_sky"], 0.0)
    # nothing found at the centre of the blank cutout: a generic start, and the flag says so
    assert flags[0] == 0 and flags[1] == 0 and flags[2] & int(Flag.INIT_FALLBACK)
    assert all(np.isfinite(v).all() for v in cols.values())


def test_complete_starts_runs_no_sep_when_nothing_is_open(monkeypatch):
    from galmoss_auto.initnet import sep_init
    from galmoss_auto.initnet.bulge_disk import complete_starts
    model = Model([Sersic("sersic")])
    full = {f"sersic_{p}": np.array([v]) for p, v in
            dict(x=21, y=21, mag=17, r_e=3, n=1, q=0.5, pa=10).items()}
    monkeypatch.setattr(sep_init.SepInitializer, "__call__", lambda *a, **k: pytest.fail("sep ran"))
    cols, flags = complete_starts(model, full, [_blob_cutout("a", 50.0, 1)])
    assert cols == full and flags.tolist() == [0]
    with pytest.raises(ValueError, match="sersic_x.*2 rows for 1"):
        complete_starts(model, {"sersic_x": np.array([1.0, 2.0])}, [_blob_cutout("a", 50.0, 1)])


def test_complete_starts_leaves_what_the_rule_does_not_give(monkeypatch):
    """A boxiness and a sky are not measured by the rule: a table that gives everything else
    needs no sep start (and gets no sep flag), and they keep the fitter's own guess."""
    from galmoss_auto.initnet import sep_init
    from galmoss_auto.initnet.bulge_disk import complete_starts
    model = Model([Sersic("sersic", boxy=True), FlatSky("sky")])
    given = {f"sersic_{p}": np.array([v]) for p, v in
             dict(x=21, y=21, mag=17, r_e=3, n=1, q=0.5, pa=10).items()}
    assert "sersic_c0" in {f"{c.name}_{s.name}" for c, s in model.params}
    monkeypatch.setattr(sep_init.SepInitializer, "__call__", lambda *a, **k: pytest.fail("sep ran"))
    cols, flags = complete_starts(model, given, [_blob_cutout("a", 50.0, 1)])
    assert "sersic_c0" not in cols and "sky_sky" not in cols and flags.tolist() == [0]
