"""benchmarks/neighbour_growth.py on a few held-out sdss cutouts: each growth setting is fitted on
the same masks, and a limited neighbour never ends larger than the limit allows."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("galsim")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of scripts, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.neighbour_growth import main  # noqa: E402


def test_neighbour_growth_benchmark(tmp_path):
    import torch
    threads = torch.get_num_threads()
    assert main(["--survey", "sdss", "--n", "6", "--growth", "none", "1.5", "--workdir", str(tmp_path / "w"),
                 "--results", str(tmp_path / "res"), "--tag", "t"]) == 0
    rec = json.loads((tmp_path / "res" / "t.json").read_text())
    s = rec["surveys"][0]
    assert s["survey"] == "sdss" and s["n"] == 6 and list(s["settings"]) == ["None", "1.5"]
    for r in s["settings"].values():
        assert 0.0 <= r["catastrophic"] <= 1.0 and r["dmag_scatter"] >= 0 and r["mean_iterations"] > 0
    assert s["settings"]["1.5"]["neighbours_re_over_30px"] == 0
    assert "| 1.5 |" in (tmp_path / "res" / "t.md").read_text()
    # run in-process with one thread, it hands the caller back its own thread count (a test
    # later in the session compares a fit made here with one made in a subprocess)
    assert torch.get_num_threads() == threads
