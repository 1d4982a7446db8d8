"""benchmarks/learned_gpu.py on the CPU with tiny settings: the cutouts it carries are made, every
section runs through the shipped checkpoints and writes its figures (the GPU figures themselves
come from a lent device, not from a test)."""

import json
import math
import sys
from pathlib import Path

import pytest

pytest.importorskip("galsim")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of scripts, not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.learned_gpu import INITNETS, MASKERS, main  # noqa: E402


def _finite_positive(values) -> bool:
    return all(math.isfinite(v) and v > 0 for v in values)


def test_learned_throughput_on_cpu(tmp_path):
    data, res = tmp_path / "learned", tmp_path / "res"
    assert main(["--make", str(data), "--survey", "sdss", "--n-mask", "4", "--n-init", "8"]) == 0
    assert main(["--data", str(data), "--device", "cpu", "--n", "8", "--chunks", "4", "--batches", "8",
                 "--mask-archs", "slim", "--init-archs", "compact", "--train-steps", "3", "--warmup", "1",
                 "--mask-train-batch", "2", "--init-train-batch", "8", "--train-mask-arch", "slim",
                 "--train-init-arch", "compact", "--out", str(res), "--tag", "t"]) == 0
    r = json.loads((res / "t.json").read_text())
    assert r["device_name"].startswith("CPU") and r["survey"] == "sdss"
    m, i, t = r["masker"], r["initnet"], r["training"]
    assert m["checkpoint"] == MASKERS["sdss"] and i["checkpoint"] == INITNETS["sdss"]
    # the shipped network masked every cutout (a fallback to sep would time sep instead)
    assert m["methods"]["4"] == {"maskrcnn": 4}
    assert i["valid_fraction"]["8"] > 0.5
    assert _finite_positive([*m["mask_batch"].values(), *m["network"].values(), m["builders"]["slim"]["network"],
                             *i["predict"].values(), i["archs"]["compact"]["float32"],
                             t["maskrcnn_slim"]["samples_per_s"], t["initnet_compact"]["samples_per_s"]])
    md = (res / "t.md").read_text()
    assert "## Masker (automask-sdss" in md and "| compact |" in md and "| initnet_compact | 8 |" in md
