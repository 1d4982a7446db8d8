"""Model zoo downloads and the ``galmoss-auto weights`` command, against a local HTTP server.

The server is ``http.server`` on 127.0.0.1 (port 0) in a thread; nothing leaves this machine.
"""

import http.server
import io
import json
import threading
import time

import pytest
import torch

from galmoss_auto.models import registry as reg
from galmoss_auto.models.checkpoint import ChecksumError, sha256_file
from galmoss_auto.models.download import DownloadError, download
from galmoss_auto.models.registry import cache_weights_dir, read_registry, write_registry, write_zoo_entry
from galmoss_auto.pipelines.cli import main as cli_main


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}          # path -> bytes
    truncate: set = set()     # paths sent with a full Content-Length but only half the body
    delay = 0.0               # seconds between chunks (to make downloads overlap)
    gets: list = []

    def do_GET(self):
        self.gets.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        send = body[: len(body) // 2] if self.path in self.truncate else body
        for i in range(0, len(send), 256):
            self.wfile.write(send[i:i + 256])
            if self.delay:
                time.sleep(self.delay)
        self.wfile.flush()
        if self.path in self.truncate:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    handler = type("H", (_Handler,), {"files": {}, "truncate": set(), "gets": [], "delay": 0.0})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    handler.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield handler
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def zoo_home(tmp_path, monkeypatch):
    monkeypatch.setenv("GALMOSS_AUTO_HOME", str(tmp_path / "home"))
    for var in ("GALMOSS_AUTO_WEIGHTS_URL", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "pkg").mkdir()
    monkeypatch.setattr(reg, "SHIPPED_REGISTRY", tmp_path / "pkg" / "registry.json")
    monkeypatch.setattr(reg, "SHIPPED_WEIGHTS", tmp_path / "pkg" / "weights")
    return tmp_path


def published(tmp_path, server, name="tiny-hsc-i-automask", stage="automask", urls=None, seed=0,
              survey="hsc", bands=("i",)):
    """A checkpoint made here, served by ``server`` at /w/<file>, listed in the shipped registry
    with that URL (as a larger variant would be); returns its entry."""
    torch.manual_seed(seed)
    entry = dict(name=name, stage=stage, survey=survey, bands=list(bands), version=1,
                 architecture={"builder": "torch.nn:Linear", "kwargs": {"in_features": 8, "out_features": 8}},
                 evaluation={"ap50": 0.9}, licence="BSD-3-Clause")
    path = write_zoo_entry(tmp_path / "made", entry, torch.nn.Linear(8, 8).state_dict())
    e = next(x for x in read_registry(tmp_path / "made" / "registry.json") if x["name"] == name)
    server.files[f"/w/{e['file']}"] = path.read_bytes()
    e["urls"] = [f"{server.base}/w/{e['file']}"] if urls is None else urls
    write_registry(reg.SHIPPED_REGISTRY, [x for x in read_registry(reg.SHIPPED_REGISTRY) if x["name"] != name] + [e])
    return e, path


def cache_files():
    d = cache_weights_dir()
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


# ---- download -------------------------------------------------------------------------------------

def test_good_download_with_progress(zoo_home, server):
    entry, src = published(zoo_home, server)
    out = io.StringIO()
    path = download(entry, progress=out)
    assert path == cache_weights_dir() / entry["file"] and sha256_file(path) == entry["sha256"]
    assert cache_files() == [entry["file"]]
    assert "100.0%" in out.getvalue()
    download(entry)                                            # installed: no second request
    assert len(server.gets) == 1
    download(entry, force=True)                                # --force fetches again
    assert len(server.gets) == 2


def test_corrupted_file_refused_nothing_left(zoo_home, server):
    entry, _ = published(zoo_home, server)
    key = f"/w/{entry['file']}"
    data = bytearray(server.files[key])
    data[len(data) // 2] ^= 0x01
    server.files[key] = bytes(data)
    with pytest.raises(DownloadError) as info:
        download(entry, progress=False)
    msg = str(info.value)
    assert entry["sha256"] in msg and "does not match" in msg and "weights install" in msg
    assert cache_files() == []


def test_truncated_transfer_refused(zoo_home, server):
    entry, _ = published(zoo_home, server)
    server.truncate.add(f"/w/{entry['file']}")
    with pytest.raises(DownloadError, match="truncated"):
        download(entry, progress=False, timeout=10)
    assert cache_files() == []


def test_404_then_next_mirror(zoo_home, server):
    entry, _ = published(zoo_home, server)
    entry404 = dict(entry, urls=[f"{server.base}/missing/{entry['file']}"])
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(entry404, progress=False)
    assert cache_files() == []
    both = dict(entry, urls=[f"{server.base}/missing/{entry['file']}", entry["urls"][0]])
    assert download(both, progress=False).is_file()


def test_no_url_says_how_to_install(zoo_home, server, monkeypatch):
    entry, _ = published(zoo_home, server, urls=[])
    with pytest.raises(DownloadError, match="weights install") as info:
        download(entry, progress=False)
    assert "GALMOSS_AUTO_WEIGHTS_URL" in str(info.value)
    monkeypatch.setenv("GALMOSS_AUTO_WEIGHTS_URL", f"{server.base}/w/")
    assert sha256_file(download(entry, progress=False)) == entry["sha256"]
    assert server.gets == [f"/w/{entry['file']}"]
    # a mirror folder on a shared disk works the same way
    mirror = zoo_home / "mirror"
    mirror.mkdir()
    (mirror / entry["file"]).write_bytes(server.files[f"/w/{entry['file']}"])
    monkeypatch.setenv("GALMOSS_AUTO_WEIGHTS_URL", mirror.as_uri())
    assert download(entry, progress=False, force=True).is_file()
    assert len(server.gets) == 1


def test_two_concurrent_downloads_one_file(zoo_home, server):
    entry, _ = published(zoo_home, server)
    server.delay = 0.3 / (len(server.files[f"/w/{entry['file']}"]) / 256)   # a 0.3 s transfer
    results, errors = [], []
    start = threading.Barrier(2)

    def worker():
        start.wait()                        # both find the file absent and race for it
        try:
            results.append(download(entry, progress=False))
        except Exception as exc:            # noqa: BLE001 -- reported below
            errors.append(exc)
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(results) == 2 and results[0] == results[1]
    assert len(server.gets) == 1                                  # the second found it in place
    assert cache_files() == [entry["file"]] and sha256_file(results[0]) == entry["sha256"]


def test_nonzero_rank_waits_for_rank0(zoo_home, server, monkeypatch):
    entry, src = published(zoo_home, server)
    monkeypatch.setenv("LOCAL_RANK", "1")
    dest = cache_weights_dir() / entry["file"]

    def rank0():
        time.sleep(0.3)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(src.read_bytes())
    t = threading.Thread(target=rank0)
    t.start()
    assert download(entry, progress=False, wait_timeout=20) == dest
    t.join()
    assert server.gets == []                                      # rank 1 never downloaded
    dest.unlink()
    with pytest.raises(DownloadError, match="waited"):
        download(entry, progress=False, wait_timeout=0.6)


# ---- the weights command ------------------------------------------------------------------------

def run_cli(capsys, *args):
    rc = cli_main(["weights", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_list_table_and_json(zoo_home, server, capsys):
    entry, _ = published(zoo_home, server)
    rc, out, _ = run_cli(capsys, "list")
    assert rc == 0
    header, row = out.splitlines()[:2]
    for col in ("name", "stage", "survey", "bands", "arch", "size", "installed", "metrics"):
        assert col in header
    assert entry["name"] in row and "Linear" in row and "ap50=0.9" in row and " no " in row
    rc, out, _ = run_cli(capsys, "list", "--format", "json")
    rows = json.loads(out)
    assert rc == 0 and len(rows) == 1
    for key in ("name", "stage", "survey", "band", "file", "sha256", "installed", "path"):
        assert key in rows[0]
    assert rows[0]["installed"] is False


def test_cli_download_verify_path(zoo_home, server, capsys):
    entry, _ = published(zoo_home, server)
    published(zoo_home, server, name="tiny-hsc-i-initnet", stage="initnet", seed=1)
    rc, out, _ = run_cli(capsys, "download", "--survey", "hsc", "--band", "i", "--stage", "automask",
                         "--no-progress")
    assert rc == 0 and cache_files() == [entry["file"]]
    rc, out, _ = run_cli(capsys, "path", entry["name"])
    assert rc == 0 and out.strip() == str(cache_weights_dir() / entry["file"])
    rc, out, _ = run_cli(capsys, "path", "tiny-hsc-i-initnet")
    assert rc == 1
    rc, out, _ = run_cli(capsys, "verify")
    assert rc == 0 and "ok" in out
    # a flipped byte is caught
    p = cache_weights_dir() / entry["file"]
    data = bytearray(p.read_bytes())
    data[100] ^= 0x10
    p.write_bytes(bytes(data))
    rc, out, _ = run_cli(capsys, "verify")
    assert rc == 1 and "MISMATCH" in out and entry["sha256"] in out
    # --force repairs it
    rc, _, _ = run_cli(capsys, "download", entry["name"], "--force", "--no-progress")
    assert rc == 0 and sha256_file(p) == entry["sha256"]


def test_cli_download_failure_exit_1(zoo_home, server, capsys):
    entry, _ = published(zoo_home, server, urls=[])
    rc, _, err = run_cli(capsys, "download", entry["name"], "--no-progress")
    assert rc == 1 and "weights install" in err


def test_cli_bad_use_exit_2(zoo_home, capsys):
    assert run_cli(capsys, "download")[0] == 2
    rc, _, err = run_cli(capsys, "path", "no-such-net")
    assert rc == 2 and "no-such-net" in err
    assert run_cli(capsys, "verify", "no-such-net")[0] == 2
    assert run_cli(capsys, "list", "--zoo", str(zoo_home / "absent"))[0] == 2
    with pytest.raises(SystemExit) as info:
        cli_main(["weights", "list", "--format", "xml"])
    assert info.value.code == 2


def test_cli_install_offline(zoo_home, server, capsys):
    entry, src = published(zoo_home, server)
    server.files.clear()                                          # no network source at all
    rc, out, _ = run_cli(capsys, "install", str(src))
    assert rc == 0 and "installed" in out and cache_files() == [entry["file"]]
    rc, out, _ = run_cli(capsys, "list", "--format", "json")
    assert json.loads(out)[0]["installed"] is True
    # a file that claims a registered name but differs from it is refused
    other = write_zoo_entry(zoo_home / "other", dict(read_registry(reg.SHIPPED_REGISTRY)[0], version=2),
                            torch.nn.Linear(8, 8).state_dict())
    rc, _, err = run_cli(capsys, "install", str(other))
    assert rc == 1 and entry["sha256"] in err and str(other) in err
    # an unregistered file becomes a user entry from its embedded metadata
    torch.manual_seed(5)
    new = write_zoo_entry(zoo_home / "mine", dict(name="my-lsst-r-initnet", stage="initnet", survey="lsst",
                                                  bands=["r"], version=1,
                                                  architecture={"builder": "torch.nn:Linear",
                                                                "kwargs": {"in_features": 2, "out_features": 1}}),
                          torch.nn.Linear(2, 1).state_dict())
    rc, out, _ = run_cli(capsys, "install", str(new))
    assert rc == 0 and "user entry" in out
    names = {e["name"] for e in read_registry(reg.cache_registry_path())}
    assert names == {"my-lsst-r-initnet"}
    from galmoss_auto.models.resolve import resolve_checkpoint
    r = resolve_checkpoint("initnet", "lsst", "r")
    assert (r.name, r.origin) == ("my-lsst-r-initnet", "cache") and r.load()[1]["survey"] == "lsst"


def test_cli_ship_into_package(zoo_home, capsys):
    torch.manual_seed(0)
    write_zoo_entry(zoo_home / "zoo", dict(name="legacy-r-initnet-test", stage="initnet", survey="legacy",
                                           bands=["g", "r", "z"], version=1,
                                           architecture={"builder": "torch.nn:Linear",
                                                         "kwargs": {"in_features": 2, "out_features": 1}}),
                    torch.nn.Linear(2, 1).state_dict())
    rc, out, _ = run_cli(capsys, "ship", str(zoo_home / "zoo"))
    assert rc == 0 and "shipped legacy-r-initnet-test" in out
    rc, out, _ = run_cli(capsys, "list")
    assert "shipped" in out.splitlines()[1]
    with pytest.raises(ChecksumError):
        from galmoss_auto.models.checkpoint import load_checkpoint
        load_checkpoint(reg.SHIPPED_WEIGHTS / "legacy-r-initnet-test.safetensors", "0" * 64)


@pytest.mark.slow
def test_two_processes_download_one_file(zoo_home, server):
    """The fcntl lock also holds between processes (as between DDP ranks or two shells)."""
    import os
    import subprocess
    import sys
    entry, _ = published(zoo_home, server)
    server.delay = 0.5 / (len(server.files[f"/w/{entry['file']}"]) / 256)
    go = zoo_home / "go"
    code = "\n".join([
        "import json, os, sys, time, pathlib",
        "from galmoss_auto.models.download import download",
        "pathlib.Path(sys.argv[2]).touch()",
        "while not os.path.exists(sys.argv[3]):",
        "    time.sleep(0.01)",
        "print(download(json.loads(sys.argv[1]), progress=False))"])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", code, json.dumps(entry), str(zoo_home / f"ready{i}"), str(go)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    deadline = time.time() + 120
    while not all((zoo_home / f"ready{i}").exists() for i in range(2)) and time.time() < deadline:
        time.sleep(0.05)
    go.touch()                               # both imported: they now race for the file
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    assert outs[0][0].strip() == outs[1][0].strip() == str(cache_weights_dir() / entry["file"])
    assert cache_files() == [entry["file"]]
    assert sha256_file(cache_weights_dir() / entry["file"]) == entry["sha256"]
    assert len(server.gets) == 1             # the second process found it in place
