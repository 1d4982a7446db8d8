"""The checkpoints shipped inside the package (models/registry.json + models/weights/).

Each shipped file must match its registry entry (hash, size, embedded metadata), load on the CPU
without pickle, rebuild into its network, and reproduce the reference outputs stored when it was
saved.  Together they must cover every band of the four built-in survey presets for both learned
stages, within the package budget.
"""

import pytest
import torch

from galmoss_auto.data_scripts.surveys import list_surveys, load_survey
from galmoss_auto.models.build import build_model, check_reference
from galmoss_auto.models.checkpoint import FILE_KEYS, load_checkpoint
from galmoss_auto.models.registry import (MAX_FILE_BYTES, MAX_TOTAL_BYTES, SHIPPED_REGISTRY, SHIPPED_WEIGHTS,
                                          STAGES, matches, read_registry)
from galmoss_auto.models.resolve import check_compatibility

ENTRIES = read_registry(SHIPPED_REGISTRY)
PACKAGED = [e for e in ENTRIES if (SHIPPED_WEIGHTS / e["file"]).is_file()]
no_shipped = pytest.mark.skipif(not PACKAGED, reason="no checkpoints are shipped in models/weights yet")


def test_registry_readable_and_listed_files_exist():
    files = {e["file"] for e in ENTRIES}
    for f in SHIPPED_WEIGHTS.glob("*.safetensors") if SHIPPED_WEIGHTS.is_dir() else []:
        assert f.name in files, f"{f} is in models/weights but not in models/registry.json"
    for e in ENTRIES:
        assert "sha256" in e and "size" in e, f"{e['name']}: shipped entries need sha256 and size"


def test_package_budget():
    sizes = [(SHIPPED_WEIGHTS / e["file"]).stat().st_size for e in PACKAGED]
    assert all(s <= MAX_FILE_BYTES for s in sizes)
    assert sum(sizes) <= MAX_TOTAL_BYTES


@no_shipped
@pytest.mark.parametrize("entry", PACKAGED, ids=[e["name"] for e in PACKAGED])
def test_shipped_checkpoint_loads_and_predicts_as_saved(entry):
    path = SHIPPED_WEIGHTS / entry["file"]
    assert path.stat().st_size == entry["size"]
    state, embedded, ref = load_checkpoint(path, entry["sha256"], with_reference=True)
    assert embedded == {k: v for k, v in entry.items() if k not in FILE_KEYS}
    torch.manual_seed(0)
    model = build_model(embedded, state)
    assert ref, f"{entry['name']}: shipped without a reference input/output (write_zoo_entry(reference_input=...))"
    assert check_reference(model, ref, rtol=1e-3, atol=1e-4) == []


@no_shipped
@pytest.mark.parametrize("entry", PACKAGED, ids=[e["name"] for e in PACKAGED])
def test_shipped_range_covers_its_survey(entry):
    if entry["survey"] == "*":
        pytest.skip("generic entry")
    survey = load_survey(entry["survey"])
    for band in entry["bands"]:
        if band == "*":
            continue
        assert check_compatibility(entry, survey.pixel_scale, survey.band(band).psf_fwhm) == []


@no_shipped
@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("survey", list_surveys())
def test_every_builtin_band_has_a_shipped_checkpoint(stage, survey):
    missing = [b for b in load_survey(survey).bands
               if not any(matches(e, stage, survey, b) for e in PACKAGED)]
    assert not missing, f"no shipped {stage} checkpoint for {survey} band(s) {', '.join(missing)}"
