"""``galmoss-auto train``: option checks (exit 2), the orchestration on a tiny stage (zoo entry,
report, resume, refusal to clobber), a 2-process DDP training (gloo, in a subprocess: DDP
re-launches sys.argv) writing one checkpoint, and (slow) the real stages end to end on a custom
survey TOML."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("galsim")

from galmoss_auto.pipelines import report, train  # noqa: E402

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def tiny(monkeypatch):
    """Train the tiny test stage (tests/train_tiny_stage.py) under the name initnet."""
    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.setattr(train, "STAGES", {"initnet": "train_tiny_stage"})


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A --data folder: 16 training and 8 validation 32-px SDSS cutouts (train/, val/)."""
    from galmoss_auto.data_scripts.simulate import simulate
    root = tmp_path_factory.mktemp("trainsim")
    simulate("sdss", "r", 16, 1, root / "train", size=32, progress=False, workers=1)
    simulate("sdss", "r", 8, 1 + train.VAL_SEED_OFFSET, root / "val", size=32, progress=False,
             workers=1)
    return root


def _steps(zoo: Path) -> list[int]:
    """Optimizer steps logged in the CSV logs (every version)."""
    m = report.read_metrics(zoo / "lightning" / "initnet" / "logs")
    return sorted({s for v in m.values() for s, _ in v})


@pytest.mark.parametrize("extra, message", [
    ({"--survey": "nosuch"}, "unknown survey 'nosuch'"),
    ({"--band": "q"}, "has no band 'q'"),
    ({"--n-train": "0"}, "--n-train must be >= 1"),
    ({"--epochs": "0"}, "--epochs must be >= 1"),
    ({"--real": "x"}, "--real and --labels go together"),
    ({"--labels": "x"}, "--real and --labels go together"),
    ({"--resume": None, "--overwrite": None}, "exclude each other"),
    ({"--num-nodes": "2"}, "torchrun or srun"),
    ({"--size": "16"}, "--size must be >= 32"),
    ({"--data": "/nonexistent/sim"}, "--data"),
    ({"--precision": "16-mixed", "--accelerator": "cpu"}, "needs a GPU"),
    ({"--serve-bands": "g"}, "must include the trained band"),
    ({"--serve-bands": "r,q"}, "'q'"),
    ({"--version": "2/../x"}, "--version must be"),
    ({"--blend-prob": "1.5"}, "--blend-prob must be in [0, 1], got 1.5"),
    ({"--blend-prob": "0.5", "--data": "/nonexistent/sim"}, "--blend-prob sets how training data"),
    ({"--init-weights": "/nonexistent/x.safetensors"}, "--init-weights /nonexistent/x.safetensors: no such file"),
    ({"--init-weights": "initnet=automask-sdss-u-g-r-i-z-slim-v4"}, "a automask checkpoint, not initnet"),
    ({"--init-weights": "initnet-legacy-compact-wide-v3", "--stage": "automask"}, "a initnet checkpoint, not automask"),
])
def test_bad_options_exit_2(tmp_path, capsys, extra, message):
    opts = {"--survey": "sdss", "--band": "r", "--out": str(tmp_path / "zoo"), **extra}
    argv = [x for k, v in opts.items() for x in ((k,) if v is None else (k, v))]
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert "galmoss-auto train: error:" in err and message in err
    assert not (tmp_path / "zoo").exists()          # nothing written before the checks pass


def test_unknown_stage_module_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train, "STAGES", {"initnet": "galmoss_auto.no_such_stage"})
    assert train.main(["--survey", "sdss", "--band", "r", "--out", str(tmp_path)]) == 2
    assert "no_such_stage cannot be imported" in capsys.readouterr().err


def test_shard_layout_equal_per_rank():
    assert train.shard_layout(600, 1) == (600, 128)
    for n, world in ((600, 2), (3000, 4), (7, 2), (129, 3)):
        count, size = train.shard_layout(n, world)
        assert count >= n and size <= 128 and count % (size * world) == 0


def test_tiny_stage_zoo_report_resume(tiny, sim, tmp_path, capsys, monkeypatch):
    zoo = tmp_path / "zoo"
    common = ["--survey", "sdss", "--band", "r", "--out", str(zoo), "--data", str(sim),
              "--no-progress", "--seed", "3"]
    base = common + ["--epochs", "1"]
    assert train.main(base) == 0
    reg = json.loads((zoo / "registry.json").read_text())["entries"]
    assert len(reg) == 1
    entry = reg[0]
    t = entry["training"]
    assert t["seed"] == 3 and t["n_train"] == 16 and t["epochs"] == 1 and t["galmoss_auto_version"]
    assert "--survey sdss --band r" in t["reproduce"] and "--seed 3" in t["reproduce"]
    assert t["simulator"]["name"] == "sdss" and t["simulator"]["pixel_scale"] == 0.396
    assert (zoo / entry["file"]).is_file()
    md = (zoo / "report" / "initnet.md").read_text()
    assert "| mae_mag |" in md and "initnet_loss.png" in md and "pred_vs_true.png" in md
    assert (zoo / "report" / "initnet_loss.png").stat().st_size > 1000
    ckpts = sorted(p.name for p in (zoo / "lightning" / "initnet" / "checkpoints").iterdir())
    assert ckpts == ["last.ckpt"]
    assert max(_steps(zoo)) == 3                      # 16 cutouts / batch 4 = 4 steps (0..3)

    # a second training into the same zoo must not silently start over
    assert train.main(base) == 2
    assert "use --resume" in capsys.readouterr().err
    # --resume continues from last.ckpt: epoch 2 adds steps 4..7 in a new log version, with
    # the network the checkpoint holds even though the stage's defaults changed meanwhile
    import train_tiny_stage
    monkeypatch.setitem(train_tiny_stage.DEFAULTS, "width", 8)
    assert train.main(common + ["--epochs", "2", "--resume"]) == 0
    assert max(_steps(zoo)) == 7
    assert len(list((zoo / "lightning" / "initnet" / "logs").glob("version_*"))) == 2
    assert json.loads((zoo / "registry.json").read_text())["entries"][0]["training"]["epochs"] == 2


def test_blend_prob_sets_the_simulated_training_data(tiny, tmp_path):
    """--blend-prob reaches the simulator (run.json, the blends drawn), names the cached data
    folder (so a different value is simulated anew) and is in the reproduce command."""
    from astropy.table import Table
    zoo = tmp_path / "zoo"
    assert train.main(["--survey", "sdss", "--band", "r", "--out", str(zoo), "--no-progress",
                       "--epochs", "1", "--n-train", "12", "--n-val", "4", "--size", "32",
                       "--blend-prob", "1"]) == 0
    folders = sorted((zoo / "data").iterdir())
    assert [f.name for f in folders] == ["sdss-r-32px-sersic-blend1-s1-n12",
                                         f"sdss-r-32px-sersic-blend1-s{1 + train.VAL_SEED_OFFSET}-n4"]
    for f in folders:
        assert json.loads((f / "run.json").read_text())["blend_prob"] == 1.0
    objects = Table.read(folders[0] / "objects.ecsv")
    assert sum(str(k) == "blend" for k in objects["kind"]) == 12      # one per cutout at 1.0
    entry = json.loads((zoo / "registry.json").read_text())["entries"][0]
    assert "--blend-prob 1" in entry["training"]["reproduce"]
    assert entry["training"]["simulator"]["blend_prob"] == 1.0


def test_stage_default_blend_prob_is_used_without_the_option(tiny, tmp_path, monkeypatch):
    """A stage whose DEFAULTS name a blend_prob (automask's) simulates with it; the option wins."""
    import train_tiny_stage
    monkeypatch.setitem(train_tiny_stage.DEFAULTS, "blend_prob", 1.0)
    common = ["--survey", "sdss", "--band", "r", "--no-progress", "--epochs", "1", "--n-train", "8",
              "--n-val", "4", "--size", "32"]
    assert train.main(common + ["--out", str(tmp_path / "a")]) == 0
    runs = [json.loads(p.read_text()) for p in sorted((tmp_path / "a" / "data").glob("*/run.json"))]
    assert [r["blend_prob"] for r in runs] == [1.0, 1.0]
    entry = json.loads((tmp_path / "a" / "registry.json").read_text())["entries"][0]
    assert entry["training"]["simulator"]["blend_prob"] == 1.0
    assert train.main(common + ["--out", str(tmp_path / "b"), "--blend-prob", "0"]) == 0
    runs = [json.loads(p.read_text()) for p in sorted((tmp_path / "b" / "data").glob("*/run.json"))]
    assert [r["blend_prob"] for r in runs] == [0.0, 0.0]


def test_serve_bands_all_registers_every_preset_band(tiny, sim, tmp_path):
    """A checkpoint trained on r and served for all SDSS bands is found for g as well."""
    from galmoss_auto.models import resolve_checkpoint
    zoo = tmp_path / "zoo"
    assert train.main(["--survey", "sdss", "--band", "r", "--out", str(zoo), "--data", str(sim),
                       "--no-progress", "--epochs", "1", "--serve-bands", "all"]) == 0
    entry = json.loads((zoo / "registry.json").read_text())["entries"][0]
    assert sorted(entry["bands"]) == sorted(["u", "g", "r", "i", "z"])
    assert "--serve-bands all" in entry["training"]["reproduce"]
    # the stage's export is handed the preset's range for all served bands (u is the widest PSF)
    lo, hi = entry["training"]["trained_for"]["pixel_scale"]
    assert lo < 0.396 < hi
    assert entry["training"]["trained_for"]["psf_fwhm_arcsec"][1] > 1.5
    assert resolve_checkpoint("initnet", "sdss", "g", zoo=zoo) is not None


def test_version_names_the_checkpoint(tiny, sim, tmp_path, monkeypatch):
    zoo = tmp_path / "zoo"
    assert train.main(["--survey", "sdss", "--band", "r", "--out", str(zoo), "--data", str(sim),
                       "--no-progress", "--epochs", "1", "--version", "2"]) == 0
    entry = json.loads((zoo / "registry.json").read_text())["entries"][0]
    assert entry["name"].endswith("-v2") and "--version 2" in entry["training"]["reproduce"]
    # a stage whose export forwards **kw (as initnet's does) is handed the version too
    import train_tiny_stage
    plain = train_tiny_stage.export
    monkeypatch.setattr(train_tiny_stage, "export", lambda module, zoo_dir, **kw: plain(module, zoo_dir, **kw))
    assert train.main(["--survey", "sdss", "--band", "r", "--out", str(tmp_path / "zoo3"), "--data",
                       str(sim), "--no-progress", "--epochs", "1", "--version", "3"]) == 0
    entry = json.loads((tmp_path / "zoo3" / "registry.json").read_text())["entries"][0]
    assert entry["name"].endswith("-v3")


_DDP_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from galmoss_auto.pipelines import train
train.STAGES.clear()
train.STAGES["initnet"] = "train_tiny_stage"
sys.exit(train.main(sys.argv[1:]))
"""


def test_ddp_two_processes_write_one_checkpoint(sim, tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(_DDP_SCRIPT.format(tests=str(TESTS)))
    zoo = tmp_path / "zoo"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID"):
        env.pop(k, None)
    proc = subprocess.run([sys.executable, str(script), "--survey", "sdss", "--band", "r",
                           "--out", str(zoo), "--data", str(sim), "--epochs", "1",
                           "--devices", "2", "--accelerator", "cpu", "--no-progress"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting with 2 processes" in proc.stderr + proc.stdout
    ckpts = list((zoo / "lightning" / "initnet" / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == ["last.ckpt"]
    # DistributedSampler: each rank took 8 of the 16 cutouts, so an epoch is 2 steps, not 4
    assert max(_steps(zoo)) == 1
    entries = json.loads((zoo / "registry.json").read_text())["entries"]
    assert len(entries) == 1 and entries[0]["training"]["devices"] == 2
    assert len(list(zoo.glob("*.safetensors"))) == 1
    assert not list((zoo / "lightning").glob("plan-*.json"))          # cleaned up by rank 0


def test_metrics_table_layouts():
    nested = report.metrics_table({"net": {"iou": 0.9, "ap50": 0.5}, "sep": {"iou": 0.7}})
    assert "| metric | net | sep |" in nested and "| iou | 0.9 | 0.7 |" in nested
    flat = report.metrics_table({"n": 32, "initnet_sigma_mag": 0.05, "sep_sigma_mag": 0.09,
                                 "initnet_bias_mag": 0.01, "sep_bias_mag": 0.0,
                                 "initnet_sigma_n": 0.2, "sep_sigma_n": 0.3,
                                 "initnet_sigma_mag_snr500-inf": float("nan"),
                                 "sep_sigma_mag_snr500-inf": float("nan")})
    assert "| metric | initnet | sep |" in flat and "| sigma_mag | 0.05 | 0.09 |" in flat
    assert "snr500-inf" not in flat and "| n | 32 |" in flat


@pytest.mark.slow
def test_train_end_to_end_custom_survey(tmp_path):
    """Both real stages at a tiny size on a survey TOML that is not built in; the zoo then
    resolves for run --zoo."""
    pytest.importorskip("galmoss_auto.automask.lightning")
    pytest.importorskip("galmoss_auto.initnet.lightning")
    from galmoss_auto.models import resolve_checkpoint
    src = Path(train.__file__).resolve().parents[1] / "data_scripts" / "surveys" / "sdss.toml"
    toml = tmp_path / "mysurvey.toml"
    toml.write_text(src.read_text().replace('name = "sdss"', 'name = "mysurvey"')
                    .replace("pixel_scale = 0.396", "pixel_scale = 0.3"))
    zoo = tmp_path / "zoo"
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-m", "galmoss_auto.pipelines.cli", "train",
                           "--survey", str(toml), "--band", "r", "--out", str(zoo),
                           "--n-train", "32", "--n-val", "16", "--epochs", "1", "--size", "64",
                           "--batch-size", "8", "--no-progress"],
                          capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    entries = json.loads((zoo / "registry.json").read_text())["entries"]
    assert sorted(e["stage"] for e in entries) == ["automask", "initnet"]
    for e in entries:
        assert e["survey"] == "mysurvey" and e["bands"] == ["r"]
        assert e["training"]["simulator"]["file"] == str(toml.resolve())
        assert e["training"]["command"].startswith("galmoss-auto train --survey")
        assert (zoo / "report" / f"{e['stage']}.md").is_file()
        assert (zoo / "report" / f"{e['stage']}_loss.png").is_file()
        resolved = resolve_checkpoint(e["stage"], "mysurvey", "r", zoo=zoo)
        assert resolved is not None and resolved.origin == "zoo" and resolved.path.is_file()


def test_init_weights_start_the_network_from_a_checkpoint(tmp_path):
    """--init-weights loads the shipped initnet into the module before training, in the
    checkpoint's own architecture when --arch is not given: at a learning rate of 1e-12 the
    exported weights are the shipped ones, and the entry says where they started; without it
    the network starts at random."""
    import torch

    from galmoss_auto.initnet.lightning import DEFAULTS
    from galmoss_auto.models import load_checkpoint, read_registry, resolve_checkpoint
    from galmoss_auto.models.registry import SHIPPED_REGISTRY
    # a shipped network whose architecture is not the default, so that taking it from the
    # checkpoint is what makes the weights fit
    names = [e["name"] for e in read_registry(SHIPPED_REGISTRY)
             if e["stage"] == "initnet" and e["training"]["arch"] != DEFAULTS["arch"]]
    assert names, "every shipped initnet has the default architecture"
    shipped = resolve_checkpoint("initnet", None, None, weights=names[0])
    arch = shipped.entry["training"]["arch"]
    base, _ = load_checkpoint(shipped.path)
    common = ["--survey", "sdss", "--band", "r", "--stage", "initnet", "--n-train", "16",
              "--n-val", "16", "--epochs", "1", "--batch-size", "8", "--lr", "1e-12",
              "--no-progress"]
    weights = {}
    for tag, extra in (("start", ["--init-weights", names[0]]), ("random", ["--arch", arch])):
        zoo = tmp_path / tag
        assert train.main(common + ["--out", str(zoo)] + extra) == 0
        entry = json.loads((zoo / "registry.json").read_text())["entries"][0]
        weights[tag], _ = load_checkpoint(zoo / entry["file"])
        assert entry["training"]["arch"] == arch
        if tag == "start":
            assert entry["training"]["init_weights"] == {"name": names[0],
                                                         "sha256": shipped.sha256}
            assert f"--init-weights initnet={names[0]}" in entry["training"]["reproduce"]
            assert f"--arch {arch}" in entry["training"]["reproduce"]
        else:
            assert "init_weights" not in entry["training"]
    conv = [k for k, v in base.items() if k.endswith("weight") and v.ndim == 4]
    assert conv
    for k in conv:
        torch.testing.assert_close(weights["start"][k].float(), base[k].float(), atol=1e-6, rtol=1e-5)
    assert max(float((weights["random"][k].float() - base[k].float()).abs().max()) for k in conv) > 0.01
