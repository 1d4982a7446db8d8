"""benchmarks/initnet_eval.py's truth starts: the floor its LM-iteration comparison is read against."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("galsim")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of scripts, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.initnet_eval import fit_stats, load_bd  # noqa: E402
from galmoss_auto.data_scripts.simulate import simulate  # noqa: E402
from galmoss_auto.fitting import Exponential, Model, Sersic  # noqa: E402
from galmoss_auto.initnet.bulge_disk import multi_component_start  # noqa: E402


def test_bulge_disk_truth_columns_start_the_benchmark_model(tmp_path):
    simulate("sdss", "r", n=3, seed=5, out=tmp_path / "bd", size=48, population="bulge_disk",
             contaminants=False, workers=1, fits=False, shards=True, progress=False)
    cutouts, truth = load_bd(tmp_path / "bd", limit=3)
    model = Model([Sersic("bulge"), Exponential("disk")])
    comps = truth["components"]
    # the same columns as the rule's starts, so the truth row is fitted with the same model
    rule = multi_component_start(model, {p: np.full(3, v) for p, v in
                                         dict(x=24.0, y=24.0, mag=18.0, r_e=4.0, n=2.0, q=0.7, pa=0.0).items()})
    assert set(comps) == set(rule)
    # the true light adds up to the true total magnitude and B/T
    fb, fd = 10 ** (-0.4 * comps["bulge_mag"]), 10 ** (-0.4 * comps["disk_mag"])
    np.testing.assert_allclose(-2.5 * np.log10(fb + fd), truth["total_mag"], atol=1e-6)
    np.testing.assert_allclose(fb / (fb + fd), truth["bt"], atol=1e-6)
    stats = fit_stats(cutouts, truth, comps, model, ("bulge", "disk"), snr=np.array([30.0, 30.0, 5.0]))
    assert stats["n"] == 3 and stats["mean_iter"] >= 1
    assert np.isfinite(stats["mean_iter_snr20-500"]) and np.isfinite(stats["final_sigma_total_mag"])
