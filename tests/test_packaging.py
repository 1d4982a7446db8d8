"""Packaging: one import name per module, every subpackage and data file in the built wheel,
and the wheel works on its own in a fresh environment."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOP = ("fitting", "automask", "initnet", "pipelines", "models", "data_scripts")


def _build_wheel(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(REPO)], check=True, cwd=out, capture_output=True)
    (wheel,) = out.glob("galmoss_auto-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return _build_wheel(tmp_path_factory.mktemp("wheel"))


def test_version_is_the_distribution_version():
    import galmoss_auto
    assert galmoss_auto.__version__ == version("galmoss-auto")


@pytest.mark.parametrize("name", TOP)
def test_bare_top_level_names_do_not_import(name):
    res = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=REPO, capture_output=True,
                         text=True)
    assert res.returncode != 0
    assert f"galmoss_auto.{name}" in res.stderr


def _source_files(suffix_ok) -> set[str]:
    tracked = subprocess.run(["git", "ls-files", *TOP], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    return {f"galmoss_auto/{f}" for f in tracked if suffix_ok(Path(f).suffix)}


def test_wheel_holds_every_module_and_data_file(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = _source_files(lambda s: s == ".py")
    data = _source_files(lambda s: s not in (".py", ".pyc"))
    assert modules and modules <= names, sorted(modules - names)
    assert data <= names, sorted(data - names)
    assert "galmoss_auto/__init__.py" in names
    assert not any(n.startswith(("galmoss_auto/tests", "tests/", "benchmarks/")) for n in names)


def test_wheel_runs_the_demo_in_a_fresh_venv(wheel, tmp_path):
    """A fresh venv with only the wheel installed (its dependencies borrowed from this
    environment's site-packages by a .pth path line, which does not load the editable
    install's finder) runs ``galmoss-auto demo`` from the wheel's own files."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site,
                    str(wheel)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(py), "-c", "import galmoss_auto.fitting as f; print(f.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(site)
    res = subprocess.run([str(py), "-m", "galmoss_auto.pipelines.cli", "demo", "--out",
                          str(tmp_path / "demo")], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "demo" / "catalog.fits").is_file()
