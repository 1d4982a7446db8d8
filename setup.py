"""Package discovery for the design card's layout (metadata lives in pyproject.toml).

The top-level folders (fitting/, automask/, ...) are installed as subpackages of ``galmoss_auto``.
Every package below them and every data file inside them is found here, so a new subpackage or a
shipped checkpoint lands in the wheel without being listed by hand.
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup

ROOT = Path(__file__).resolve().parent
#: Top-level folders installed under galmoss_auto (tests/ and benchmarks/ are not installed).
TOP = ("fitting", "automask", "initnet", "pipelines", "models", "data_scripts")
#: Files that are never package data.
SKIP_SUFFIXES = {".py", ".pyc", ".pyo"}


def _packages() -> tuple[list[str], dict[str, str]]:
    packages, package_dir = ["galmoss_auto"], {"galmoss_auto": "galmoss_auto"}
    for top in TOP:
        # every folder is a package (data folders such as surveys/ become namespace packages,
        # which is how setuptools wants data directories declared)
        for sub in [""] + find_namespace_packages(where=top, exclude=["*__pycache__*"]):
            name = f"galmoss_auto.{top}" + (f".{sub}" if sub else "")
            packages.append(name)
            package_dir[name] = str(Path(top, *sub.split("."))) if sub else top
    return packages, package_dir


def _package_data(packages: list[str], package_dir: dict[str, str]) -> dict[str, list[str]]:
    """Every non-Python file inside a package folder (not inside a nested package)."""
    dirs = {ROOT / package_dir[p] for p in packages}
    data = {}
    for pkg in packages:
        folder = ROOT / package_dir[pkg]
        files = []
        for f in folder.rglob("*"):
            if not f.is_file() or f.suffix in SKIP_SUFFIXES or "__pycache__" in f.parts:
                continue
            # a file belongs to the innermost package folder that holds it
            owner = max((d for d in dirs if d in f.parents), key=lambda d: len(d.parts))
            if owner == folder:
                files.append(str(f.relative_to(folder)))
        if files:
            data[pkg] = sorted(files)
    return data


PACKAGES, PACKAGE_DIR = _packages()
setup(packages=PACKAGES, package_dir=PACKAGE_DIR, package_data=_package_data(PACKAGES, PACKAGE_DIR))
