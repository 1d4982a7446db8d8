"""Shared fixtures and skip rules.

* ``gpu``-marked tests are skipped where no CUDA device is present (CI is CPU-only).
* ``shared``-marked tests read real cutouts from ``../shared/data`` beside the checkout and
  are skipped where that folder is absent.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    no_gpu = pytest.mark.skip(reason="needs a CUDA device; none is present on this machine")
    no_shared = pytest.mark.skip(reason=f"needs the real cutouts in {SHARED_DATA}, which is absent")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "shared" in item.keywords and not SHARED_DATA.is_dir():
            item.add_marker(no_shared)


@pytest.fixture
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
