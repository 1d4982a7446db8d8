"""The bulge + disk starting rule from a single-Sérsic start."""

import numpy as np

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
