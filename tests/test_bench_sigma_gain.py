"""benchmarks/sigma_gain.py on a few bright simulated cutouts: the four noise treatments run on
the same galaxies, the measured gain is used where no gain is known, and the sky-only map has
the larger χ²_ν (bright cores' photon noise left out)."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("galsim")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of scripts, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.sigma_gain import WAYS, main  # noqa: E402


def test_sigma_gain_benchmark(tmp_path):
    assert main(["--work", str(tmp_path / "w"), "--n", "12", "--size", "48", "--mag-range", "13", "14",
                 "--results", str(tmp_path / "res"), "--tag", "t"]) == 0
    res = json.loads((tmp_path / "res" / "t.json").read_text())["results"]
    assert list(res) == list(WAYS) and all(r["n"] == 12 for r in res.values())
    assert res["measured"]["gain_sources"].get("estimated", 0) >= 10
    assert res["preset_gain"]["gain_sources"] == {"survey": 12}
    assert res["sky_only"]["gain_sources"] == {"none": 12}
    assert res["sky_only"]["chi2_nu_median"] > res["measured"]["chi2_nu_median"]
    assert res["measured"]["dmag_sigma"] < 0.05
    assert "| measured |" in (tmp_path / "res" / "t.md").read_text()
