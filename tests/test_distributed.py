"""``galmoss-auto run --devices N``: rank detection from torchrun/SLURM variables, option
checks, and a 2-process run (gloo, ranks started as subprocesses) giving the same catalog as
one process, each id once in input order; (slow) a failed rank reported by number, then
``--resume`` completing the run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

pytest.importorskip("galsim")

from galmoss_auto.pipelines import distributed  # noqa: E402
from galmoss_auto.pipelines.config import RunConfig  # noqa: E402

_LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE",
                "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS",
                "SLURM_PROCID", "SLURM_JOB_NAME", "SLURM_NODELIST", "SLURM_LOCALID", "SLURM_NODEID",
                "SLURM_JOB_ID", "SLURM_NTASKS_PER_NODE", "LSB_JOBID", "NODE_RANK")


@pytest.fixture
def clean_env(monkeypatch):
    for k in _LAUNCH_VARS:
        monkeypatch.delenv(k, raising=False)
    # Lightning reads the process's rank from these variables once, when first imported, and
    # keeps it (rank_zero_only): import it here, in the clean environment, not under the ranks
    # the tests set (a later training test would then log nothing, as if it were rank 5)
    import lightning  # noqa: F401
    return monkeypatch


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """8 SDSS-like 48-px cutouts with neighbours (manifest with sigma and PSF)."""
    from galmoss_auto.data_scripts.simulate import simulate
    root = tmp_path_factory.mktemp("distsim")
    return Path(simulate("sdss", "r", 8, 5, root / "sim", size=48, progress=False, shards=False,
                         workers=1))


@pytest.fixture(scope="module")
def one_process(sim, tmp_path_factory):
    from galmoss_auto.pipelines.run import run
    out = tmp_path_factory.mktemp("run1")
    run(RunConfig(input=str(sim), out=str(out), mask="sep", init="sep", workers=0,
                  progress=False))
    return Table.read(out / "catalog.fits")


def _cli_run(sim, out, *extra, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS}
    env.update(OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "galmoss_auto.pipelines.cli", "run", str(sim),
                           "--out", str(out), "--mask", "sep", "--init", "sep", "--no-progress",
                           "--devices", "2", "--accelerator", "cpu", *extra],
                          capture_output=True, text=True, timeout=600, env=env)


def _same_catalog(a: Table, b: Table) -> None:
    assert list(a["id"]) == list(b["id"])
    assert a.colnames == b.colnames
    for c in a.colnames:
        x, y = np.asarray(a[c]), np.asarray(b[c])
        if x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=c)
        else:
            assert (x == y).all(), c


def test_external_launch_from_torchrun_variables(clean_env):
    assert distributed.external_launch() is None
    clean_env.setenv("RANK", "1")
    clean_env.setenv("WORLD_SIZE", "4")
    clean_env.setenv("LOCAL_RANK", "1")
    clean_env.setenv("GROUP_RANK", "0")
    clean_env.setenv("LOCAL_WORLD_SIZE", "2")
    clean_env.setenv("MASTER_ADDR", "10.0.0.1")
    clean_env.setenv("MASTER_PORT", "29500")
    clean_env.setenv("TORCHELASTIC_RUN_ID", "x")
    launch = distributed.external_launch()
    assert (launch.rank, launch.world_size, launch.local_rank, launch.launcher) == (1, 4, 1, "torchrun")
    assert (launch.main_address, launch.main_port) == ("10.0.0.1", 29500)
    cfg = RunConfig(input="in", out="out", workers=0)
    with pytest.raises(ValueError, match="torchrun started 4 processes but --devices 2"):
        distributed.run_distributed(cfg, devices=2, num_nodes=1, accelerator="cpu")
    clean_env.setenv("WORLD_SIZE", "1")
    assert distributed.external_launch() is None       # a world of one is not distributed


def test_external_launch_from_slurm_variables(clean_env):
    """srun's variables pass the cheap check before Lightning's own detection."""
    # Lightning's SLURM environment writes MASTER_ADDR / MASTER_PORT into os.environ when asked
    # for them: on a copy, so that nothing leaks into later tests (a DDP test would dial node01)
    clean_env.setattr(os, "environ", os.environ.copy())
    for k, v in {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "2", "SLURM_PROCID": "5",
                 "SLURM_LOCALID": "1", "SLURM_NODEID": "2", "SLURM_NODELIST": "node[01-04]",
                 "SLURM_JOB_ID": "4321", "SLURM_JOB_NAME": "galmoss"}.items():
        clean_env.setenv(k, v)
    launch = distributed.external_launch()
    assert (launch.rank, launch.world_size, launch.local_rank, launch.node_rank, launch.launcher) == \
        (5, 8, 1, 2, "slurm")


def test_plain_run_does_not_import_lightning():
    """Without a launcher's variables, deciding that nothing is distributed costs no Lightning
    import (seconds on every `galmoss-auto run`)."""
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCH_VARIABLES}
    code = ("import sys; from galmoss_auto.pipelines import distributed as d; "
            "print(d.external_launch(), 'lightning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None", "False"]


def test_rank_settings_and_bad_sizes(clean_env, tmp_path):
    cfg = RunConfig(input="in", out=str(tmp_path), workers=0)
    launch = distributed.Launch(rank=3, world_size=4, local_rank=1, node_rank=1,
                                main_address="h", main_port=1, launcher="slurm")
    r = distributed._rank_settings(cfg, launch, "gpu", 2, workers_auto=False)
    assert (r.rank, r.world_size, r.device, r.workers) == (3, 4, "cuda:1", 0)
    assert distributed._rank_settings(cfg, launch, "cpu", 2, False).device == "cpu"
    with pytest.raises(ValueError, match="contradicts"):
        distributed._rank_settings(RunConfig(input="in", out="o", device="cuda:0", workers=0),
                                   launch, "cpu", 2, False)
    with pytest.raises(ValueError, match="--devices must be >= 1"):
        distributed.run_distributed(cfg, devices=0)
    with pytest.raises(ValueError, match="torchrun or srun"):
        distributed.run_distributed(cfg, devices=2, num_nodes=2, accelerator="cpu")


def test_two_processes_same_catalog_as_one(sim, one_process, tmp_path):
    out = tmp_path / "run2"
    proc = _cli_run(sim, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cat = Table.read(out / "catalog.fits")
    assert len(set(cat["id"])) == len(cat) == 8                    # each id exactly once
    _same_catalog(one_process, cat)
    shards = sorted(p.name for p in (out / "shards").glob("part-*.ecsv"))
    assert any(n.startswith("part-r0-") for n in shards) and any(n.startswith("part-r1-") for n in shards)
    record = json.loads((out / "run.json").read_text())
    assert record["world_size"] == 2 and record["counts"]["galaxies"] == 8
    assert [r["galaxies"] for r in record["ranks"]] == [4, 4]
    # the folder now holds results: without --resume or --overwrite rank 0 refuses it
    from galmoss_auto.pipelines.run import RunError
    with pytest.raises(RunError, match="use --resume"):
        distributed._preflight(RunConfig(input=str(sim), out=str(out), workers=0))
    distributed._preflight(RunConfig(input=str(sim), out=str(out), workers=0, overwrite=True))
    assert not (out / "shards").exists() and not (out / "run-r1.json").exists()


@pytest.mark.slow
def test_failed_rank_reported_then_resume(sim, one_process, tmp_path):
    out = tmp_path / "run2"
    proc = _cli_run(sim, out, env_extra={distributed.FAIL_RANK_ENV: "1"})
    assert proc.returncode == 1
    assert "rank 1" in proc.stderr and "failing on purpose" in proc.stderr
    assert "--resume" in proc.stderr
    assert not (out / "catalog.fits").exists()                     # no partial catalog
    assert list((out / "shards").glob("part-r0-*.ecsv"))           # rank 0's work is kept
    proc = _cli_run(sim, out, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _same_catalog(one_process, Table.read(out / "catalog.fits"))
    record = json.loads((out / "run.json").read_text())
    assert record["counts"]["processed_this_session"] == 4         # only rank 1's block redone


@pytest.mark.slow
def test_crashed_ranks_reported_then_resume(sim, one_process, tmp_path):
    from galmoss_auto.pipelines.run import CRASH_ENV
    out = tmp_path / "run2"
    proc = _cli_run(sim, out, "--chunk-size", "2", env_extra={CRASH_ENV: "1"})
    assert proc.returncode == 1 and "exited with code 137" in proc.stderr
    proc = _cli_run(sim, out, "--chunk-size", "2", "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _same_catalog(one_process, Table.read(out / "catalog.fits"))
