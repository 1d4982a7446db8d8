"""benchmarks/psf_pedestal.py on two galaxies: a PSF file over-subtracted by 0.2 % of its peak
fits as the clean one does, and the reader's note reaches the record."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("galsim")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of scripts, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.psf_pedestal import main  # noqa: E402


def test_psf_pedestal_benchmark(tmp_path):
    assert main(["--n", "2", "--cases", "moffat", "--workdir", str(tmp_path / "w"),
                 "--results", str(tmp_path / "res"), "--tag", "t"]) == 0
    rows = json.loads((tmp_path / "res" / "t.json").read_text())["rows"]
    clean, shifted = rows["moffat+0.00%"], rows["moffat-0.20%"]
    assert clean["said"] == "" and "subtracted" in shifted["said"]
    assert shifted["dmag_median"] == pytest.approx(clean["dmag_median"], abs=0.005)
    assert shifted["dlogre_median"] == pytest.approx(clean["dlogre_median"], abs=0.005)
    assert "| moffat-0.20% |" in (tmp_path / "res" / "t.md").read_text()
