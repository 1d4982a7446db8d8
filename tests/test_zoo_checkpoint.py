"""Model zoo: checkpoint files, registries, shipping and checkpoint resolution (no network)."""

import json
import pickle

import pytest
import torch

from galmoss_auto.models import registry as reg
from galmoss_auto.models.build import build_model, check_reference
from galmoss_auto.models.checkpoint import (CheckpointError, ChecksumError, load_checkpoint, read_entry,
                                            save_checkpoint, sha256_file)
from galmoss_auto.models.registry import (RegistryError, add_shipped, catalogue, read_registry,
                                          validate_entry, write_zoo_entry)
from galmoss_auto.models.resolve import (CompatibilityError, ResolveError, check_compatibility,
                                         require_compatible, resolve_checkpoint)


def make_entry(name="tiny-legacy-r-initnet", stage="initnet", survey="legacy", bands=("r",), version=1, **kw):
    e = dict(name=name, stage=stage, survey=survey, bands=list(bands), version=version,
             architecture={"builder": "torch.nn:Linear", "kwargs": {"in_features": 4, "out_features": 3}},
             input={"normalisation": "asinh", "scale": 1.0}, output={"transforms": {"r_e": "exp"}},
             trained_for={"size": [32, 128], "pixel_scale": [0.2, 0.3], "psf_fwhm_arcsec": [0.8, 2.0]},
             training={"command": "galmoss-auto train ...", "seed": 1, "n_train": 10, "epochs": 1},
             evaluation={"mag_mae": 0.05, "re_rel_mae": 0.1}, licence="BSD-3-Clause",
             file=f"{name}.safetensors")
    e.update(kw)
    return e


def tiny_state(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 3).state_dict()


@pytest.fixture
def zoo_home(tmp_path, monkeypatch):
    """Empty cache and an empty shipped registry, so that nothing on this machine leaks in."""
    monkeypatch.setenv("GALMOSS_AUTO_HOME", str(tmp_path / "home"))
    for var in ("GALMOSS_AUTO_WEIGHTS_URL", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(var, raising=False)
    shipped = tmp_path / "pkg"
    shipped.mkdir()
    monkeypatch.setattr(reg, "SHIPPED_REGISTRY", shipped / "registry.json")
    monkeypatch.setattr(reg, "SHIPPED_WEIGHTS", shipped / "weights")
    return tmp_path


# ---- checkpoint files ---------------------------------------------------------------------------

def test_save_load_round_trip_identical(tmp_path):
    bn = torch.nn.BatchNorm1d(3)
    bn.running_mean += 0.5
    state = {**tiny_state(), **{f"bn.{k}": v for k, v in bn.state_dict().items()}}
    entry = make_entry(file="x.safetensors", urls=[])
    sha = save_checkpoint(tmp_path / "x.safetensors", state, entry)
    assert sha == sha256_file(tmp_path / "x.safetensors")
    loaded, got = load_checkpoint(tmp_path / "x.safetensors", sha)
    assert got == entry
    assert set(loaded) == set(state)
    for k in state:
        assert loaded[k].dtype == state[k].dtype          # int64 num_batches_tracked kept
        assert torch.equal(loaded[k], state[k])
    assert read_entry(tmp_path / "x.safetensors") == entry


def test_file_keys_not_embedded_and_float16_storage(tmp_path):
    entry = make_entry(sha256="0" * 64, size=12)
    state = tiny_state()
    save_checkpoint(tmp_path / "h.safetensors", state, entry, dtype=torch.float16)
    loaded, got = load_checkpoint(tmp_path / "h.safetensors")
    assert "sha256" not in got and "size" not in got
    assert got["storage_dtype"] == "float16"
    assert loaded["weight"].dtype == torch.float16
    assert torch.allclose(loaded["weight"].float(), state["weight"], atol=1e-3)
    m = torch.nn.Linear(4, 3)
    m.load_state_dict(loaded)                                 # cast back to float32 on load
    assert m.weight.dtype == torch.float32


def test_sha_mismatch_names_file_and_both_hashes(tmp_path):
    path = tmp_path / "c.safetensors"
    sha = save_checkpoint(path, tiny_state(), make_entry())
    wrong = "f" * 64
    with pytest.raises(ChecksumError) as info:
        load_checkpoint(path, wrong)
    msg = str(info.value)
    assert str(path) in msg and sha in msg and wrong in msg


def test_loading_never_unpickles(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, tiny_state(), make_entry())
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"weight": Evil()}, tmp_path / "evil.pt")

    def forbidden(*a, **k):
        raise AssertionError("unpickling attempted")
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    state, entry = load_checkpoint(path)                      # works without pickle
    assert entry["name"] == "tiny-legacy-r-initnet" and "weight" in state
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_foreign_safetensors_and_missing_file_refused(tmp_path):
    from safetensors.torch import save_file
    save_file({"a": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="without galmoss-auto metadata"):
        load_checkpoint(tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_reference_outputs_reproduced_and_detect_change(tmp_path):
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(3))
    path = write_zoo_entry(tmp_path / "zoo", make_entry(), tiny_state(), reference_input=x)
    state, entry, ref = load_checkpoint(path, with_reference=True)
    assert set(ref) == {"input", "output"} and ref["output"].shape == (5, 3)
    model = build_model(entry, state)
    assert check_reference(model, ref) == []
    with torch.no_grad():
        model.bias += 0.1
    assert check_reference(model, ref) and "differs" in check_reference(model, ref)[0]


def test_builder_outside_trusted_packages_refused():
    e = make_entry(architecture={"builder": "os:system", "kwargs": {"command": "true"}})
    with pytest.raises(CheckpointError, match="trusted"):
        build_model(e)


# ---- registries -----------------------------------------------------------------------------------

def test_write_zoo_entry_updates_registry(tmp_path):
    zoo = tmp_path / "zoo"
    p1 = write_zoo_entry(zoo, make_entry(), tiny_state(0))
    write_zoo_entry(zoo, make_entry(name="tiny-legacy-g-initnet", bands=["g"]), tiny_state(1))
    p1b = write_zoo_entry(zoo, make_entry(evaluation={"mag_mae": 0.01}), tiny_state(2))   # replaced
    assert p1 == p1b == zoo / "tiny-legacy-r-initnet.safetensors"
    entries = {e["name"]: e for e in read_registry(zoo / "registry.json")}
    assert set(entries) == {"tiny-legacy-r-initnet", "tiny-legacy-g-initnet"}
    e = entries["tiny-legacy-r-initnet"]
    assert e["sha256"] == sha256_file(p1) and e["size"] == p1.stat().st_size and e["urls"] == []
    assert e["evaluation"] == {"mag_mae": 0.01}
    data = json.loads((zoo / "registry.json").read_text())
    assert data["format"] == 1


@pytest.mark.parametrize("bad, match", [
    ({"stage": "fitter"}, "stage"), ({"bands": []}, "bands"), ({"file": "../x.safetensors"}, "file"),
    ({"name": "a b"}, "name"), ({"trained_for": {"size": [64, 32]}}, "trained_for.size"),
    ({"sha256": "abc"}, "sha256"), ({"architecture": {"kwargs": {}}}, "builder")])
def test_validate_entry_names_the_problem(bad, match):
    with pytest.raises(RegistryError, match=match):
        validate_entry(make_entry(**bad), "test")


def test_registry_format_and_duplicates_refused(tmp_path):
    p = tmp_path / "registry.json"
    p.write_text(json.dumps({"format": 2, "entries": []}))
    with pytest.raises(RegistryError, match="format 2"):
        read_registry(p)
    e = make_entry()
    p.write_text(json.dumps({"format": 1, "entries": [e, e]}))
    with pytest.raises(RegistryError, match="duplicate"):
        read_registry(p)


def test_add_shipped_copies_checks_and_budgets(zoo_home):
    zoo = zoo_home / "zoo"
    write_zoo_entry(zoo, make_entry(), tiny_state())
    added = add_shipped(zoo)
    assert [e["name"] for e in added] == ["tiny-legacy-r-initnet"]
    assert (reg.SHIPPED_WEIGHTS / "tiny-legacy-r-initnet.safetensors").is_file()
    locs = [loc for loc in catalogue() if loc.origin == "shipped"]
    assert [loc.name for loc in locs] == ["tiny-legacy-r-initnet"] and locs[0].installed
    # over the per-file limit: refused, registry unchanged
    write_zoo_entry(zoo, make_entry(name="big-initnet"), tiny_state())
    with pytest.raises(RegistryError, match="limit"):
        add_shipped(zoo, name="big-initnet", max_file_bytes=100)
    with pytest.raises(RegistryError, match="budget"):
        add_shipped(zoo, name="big-initnet", max_total_bytes=1000)
    assert [e["name"] for e in read_registry(reg.SHIPPED_REGISTRY)] == ["tiny-legacy-r-initnet"]
    # a zoo file that no longer matches its entry never enters the package
    f = zoo / "big-initnet.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ChecksumError):
        add_shipped(zoo, name="big-initnet")


# ---- resolution ---------------------------------------------------------------------------------

def test_resolution_order_weights_zoo_cache_shipped(zoo_home):
    src = zoo_home / "src"
    write_zoo_entry(src, make_entry(name="shipped-r"), tiny_state(0))
    add_shipped(src, name="shipped-r")
    r = resolve_checkpoint("initnet", "legacy", "r")
    assert (r.name, r.origin) == ("shipped-r", "shipped")
    assert r.load()[1]["name"] == "shipped-r"
    # a file in the cache (user entry) beats the shipped one
    cache_src = write_zoo_entry(src, make_entry(name="cached-r"), tiny_state(1))
    from galmoss_auto.models.cli import _install_one
    _install_one(cache_src, force=False)
    assert resolve_checkpoint("initnet", "legacy", "r").origin == "cache"
    # a zoo beats the cache; within the zoo the highest version wins
    zoo = zoo_home / "zoo"
    write_zoo_entry(zoo, make_entry(name="zoo-v2", version="2"), tiny_state(2))
    write_zoo_entry(zoo, make_entry(name="zoo-v10", version="10"), tiny_state(3))
    r = resolve_checkpoint("initnet", "legacy", "R", zoo=zoo)
    assert (r.name, r.origin) == ("zoo-v10", "zoo")
    # --weights NAME or FILE beats everything
    assert resolve_checkpoint("initnet", "legacy", "r", zoo=zoo, weights="shipped-r").name == "shipped-r"
    f = resolve_checkpoint("initnet", "legacy", "r", zoo=zoo, weights=str(zoo / "zoo-v2.safetensors"))
    assert (f.name, f.origin) == ("zoo-v2", "file") and f.sha256 == sha256_file(zoo / "zoo-v2.safetensors")
    assert set(f.record()) >= {"name", "sha256", "origin"}
    # nothing for another band or stage
    assert resolve_checkpoint("initnet", "legacy", "z", zoo=zoo) is None
    assert resolve_checkpoint("automask", "legacy", "r", zoo=zoo) is None


def test_wildcard_only_when_no_exact(zoo_home):
    zoo = zoo_home / "zoo"
    write_zoo_entry(zoo, make_entry(name="any-survey", survey="*", bands=["*"], version=9), tiny_state(0))
    assert resolve_checkpoint("initnet", "hsc", "i", zoo=zoo).name == "any-survey"
    assert resolve_checkpoint("initnet", None, None, zoo=zoo).name == "any-survey"
    src = zoo_home / "src"
    write_zoo_entry(src, make_entry(name="legacy-exact"), tiny_state(1))
    add_shipped(src)
    assert resolve_checkpoint("initnet", "legacy", "r", zoo=zoo).name == "legacy-exact"


def test_weights_errors(zoo_home):
    zoo = zoo_home / "zoo"
    write_zoo_entry(zoo, make_entry(name="a-mask", stage="automask"), tiny_state())
    with pytest.raises(ResolveError, match="automask checkpoint, not initnet"):
        resolve_checkpoint("initnet", "legacy", "r", zoo=zoo, weights="a-mask")
    with pytest.raises(ResolveError, match="no checkpoint called"):
        resolve_checkpoint("initnet", "legacy", "r", weights="nope")
    with pytest.raises(ResolveError, match="no such file"):
        resolve_checkpoint("initnet", "legacy", "r", weights=str(zoo_home / "x.safetensors"))
    # a registered but absent file: says how to download it
    reg.write_registry(reg.SHIPPED_REGISTRY, [dict(make_entry(name="listed"), sha256="a" * 64, size=10)])
    with pytest.raises(ResolveError, match="weights download listed"):
        resolve_checkpoint("initnet", "legacy", "r", weights="listed")
    assert resolve_checkpoint("initnet", "legacy", "r") is None       # not installed: not picked
    with pytest.raises(ValueError, match="stage"):
        resolve_checkpoint("fitter", "legacy", "r")


def test_check_compatibility():
    e = make_entry()
    assert check_compatibility(e, 0.262, 1.3, 64) == []
    assert check_compatibility(e, None, None, None) == []
    probs = check_compatibility(e, [0.25, 0.396], 1.3, (64, 256))
    assert len(probs) == 2
    assert "pixel scale 0.25-0.396 arcsec/px" in probs[0] and "[0.2, 0.3]" in probs[0]
    assert "tiny-legacy-r-initnet" in probs[0] and "cutout size" in probs[1]
    assert "PSF FWHM" in check_compatibility(e, 0.262, 3.0, 64)[0]
    assert check_compatibility(make_entry(trained_for={}), 9.0, 9.0, 9) == []
    with pytest.raises(CompatibilityError, match="strict"):
        require_compatible(e, 0.396)


def test_training_range_of_a_preset_admits_real_cutouts_of_that_survey():
    """A checkpoint simulated from the sdss preset accepts SDSS's WCS pixel scale (0.3961"/px)
    and any seeing the simulator drew, and refuses HSC's pixels and a 3" PSF."""
    from galmoss_auto.data_scripts.surveys import load_survey
    from galmoss_auto.models.resolve import check_compatibility, training_range
    sdss = load_survey("sdss")
    entry = {"name": "x", "trained_for": training_range(sdss, ["g", "r"])}
    lo, hi = entry["trained_for"]["psf_fwhm_arcsec"]
    assert lo < sdss.band("r").psf_fwhm < hi and lo < sdss.band("g").psf_fwhm < hi
    assert check_compatibility(entry, pixel_scale=0.3961, psf_fwhm_arcsec=1.3) == []
    assert check_compatibility(entry, pixel_scale=0.168)[0].startswith("pixel scale 0.168")
    assert "PSF FWHM 3" in check_compatibility(entry, psf_fwhm_arcsec=3.0)[0]
