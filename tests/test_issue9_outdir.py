"""Issue 9, item 5: output directories are safe (lock, input hash on resume, unusable --out and
empty manifests exit 2 with a message), and the rank/world_size hook splits and merges."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from galmoss_auto.pipelines.cli import main


def _galaxy(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    return (40 * np.exp(-((xx - 15.5) ** 2 + (yy - 15.5) ** 2) / 12.0)
            + rng.normal(0, 0.5, (32, 32))).astype(np.float32)


@pytest.fixture
def manifest(tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(4):
        fits.PrimaryHDU(_galaxy(i)).writeto(tmp_path / "img" / f"g{i}.fits")
    path = tmp_path / "m.csv"
    path.write_text("id,image,zeropoint\n" + "".join(f"g{i},img/g{i}.fits,25\n" for i in range(4)))
    return path


ARGS = ["--workers", "0", "--no-progress", "--mask", "sep", "--init", "sep", "--errors", "none",
        "--chunk-size", "2"]


def test_live_lock_refuses_stale_lock_taken_over(manifest, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket
        (out / ".lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                               "started": "x"}))
        assert main(["run", str(manifest), "--out", str(out)] + ARGS) == 2
        err = capsys.readouterr().err
        assert ".lock" in err and str(sleeper.pid) in err and "another run" in err
        assert not (out / "shards").exists()            # nothing written before the lock
    finally:
        sleeper.kill()
        sleeper.wait()
    # the owner is dead now: its lock is stale and taken over
    assert main(["run", str(manifest), "--out", str(out)] + ARGS) == 0
    assert not (out / ".lock").exists()                  # released at the end
    assert len(Table.read(out / "catalog.fits")) == 4


def test_resume_checks_the_input_not_its_path(manifest, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--out", str(out)] + ARGS) == 0
    # the same manifest by a relative path: accepted
    monkeypatch.chdir(manifest.parent)
    assert main(["run", "m.csv", "--out", str(out), "--resume"] + ARGS) == 0
    # an edited zero-point: refused, with a message
    manifest.write_text(manifest.read_text().replace("g2,img/g2.fits,25", "g2,img/g2.fits,26"))
    capsys.readouterr()
    assert main(["run", "m.csv", "--out", str(out), "--resume"] + ARGS) == 2
    assert "differs from the earlier run" in capsys.readouterr().err


def test_unusable_out_and_empty_manifest_exit_2(manifest, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["run", str(manifest), "--out", str(afile)] + ARGS) == 2
    assert "afile: --out exists and is not a directory" in capsys.readouterr().err
    assert main(["run", str(manifest), "--out", str(afile / "sub")] + ARGS) == 2
    assert "cannot create the output directory" in capsys.readouterr().err
    empty = tmp_path / "empty.csv"
    empty.write_text("id,image\n")
    assert main(["run", str(empty), "--out", str(tmp_path / "o2")] + ARGS) == 2
    err = capsys.readouterr().err
    assert "empty.csv: manifest has a header but no rows" in err and "Traceback" not in err
    if os.geteuid() != 0:                                # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        assert main(["run", str(manifest), "--out", str(ro)] + ARGS) == 2
        assert "not writable" in capsys.readouterr().err


def test_ranks_split_the_input_and_merge_run_joins_them(manifest, tmp_path):
    import io

    from galmoss_auto.pipelines.config import RunConfig
    from galmoss_auto.pipelines.run import merge_run, run
    out = tmp_path / "ranks"
    opts = dict(workers=0, progress=False, mask="sep", init="sep", errors="none", chunk_size=1)
    for rank in (0, 1):
        rec = run(RunConfig(input=str(manifest), out=str(out), rank=rank, world_size=2, **opts),
                  stream=io.StringIO())
        assert rec["counts"]["galaxies"] == 2
        assert not (out / "catalog.fits").exists()       # the launcher merges
    names = sorted(p.name for p in (out / "shards").glob("part-*.ecsv"))
    assert names == ["part-r0-00000.ecsv", "part-r0-00001.ecsv", "part-r1-00000.ecsv",
                     "part-r1-00001.ecsv"]
    cat = merge_run(out, ["g0", "g1", "g2", "g3"])
    assert list(cat["id"]) == ["g0", "g1", "g2", "g3"]
    assert Table.read(out / "catalog.fits")["id"].tolist() == ["g0", "g1", "g2", "g3"]
