"""benchmarks/automask_eval.py: the truth-mask path, the floor its masks are read against."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("galsim")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of scripts, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import automask_eval  # noqa: E402


def test_truth_mask_grows_contaminants_but_never_over_the_central():
    seg = np.zeros((20, 20), np.int32)
    seg[5:15, 2:9] = 1          # the central galaxy
    seg[5:15, 9:12] = 2         # a blend touching it
    seg[1:3, 16:18] = 3         # a small neighbour
    m = automask_eval.truth_mask(seg, margin=2)
    assert m[seg > 1].all() and not m[seg == 1].any()
    assert m[1, 14] and m[5, 13] and not m[1, 13]       # the 2 px margin, and no further
    assert not automask_eval.truth_mask(seg, margin=0)[seg == 0].any()


@pytest.mark.slow
def test_run_survey_reports_every_fit_path(tmp_path):
    """A tiny run of the benchmark: the truth-mask fits and the blend split are in the record
    and in its table."""
    from galmoss_auto.automask.predict import MaskRCNNMasker
    from galmoss_auto.models import resolve_checkpoint
    ckpt = resolve_checkpoint("automask", "sdss", "r")
    r = automask_eval.run_survey(MaskRCNNMasker(checkpoint=str(ckpt.path)), "sdss", "r", 4, 9301, 96,
                                 tmp_path, 0.5)
    for m in ("alone", "truth_masks", "sep", "maskrcnn"):
        f = r[f"fit_{m}"]
        assert len(f["_dm"]) == 4
        assert 0 <= f["catastrophic"] <= 1 and "catastrophic_without_blend" in f
    md = automask_eval._markdown({"tag": "t", "machine": "m", "threads": 1, "checkpoints": {}, "surveys": [r],
                                  "notes": []})
    assert "| sdss | truth masks |" in md
