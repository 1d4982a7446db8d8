"""The tools the benchmark knows, by display name (ours first)."""

from __future__ import annotations

from importlib import import_module

_MODULES = {
    "galmoss-auto": "benchmarks.peers.ours",
    "AstroPhot": "benchmarks.peers.astrophot_peer",
    "GalMOSS": "benchmarks.peers.galmoss_peer",
    "PyImfit": "benchmarks.peers.pyimfit_peer",
}
_ALIASES = {k.lower(): k for k in _MODULES} | {"ours": "galmoss-auto", "imfit": "PyImfit"}


def names() -> list[str]:
    """Display names, ours first."""
    return list(_MODULES)


def canonical(name: str) -> str:
    """Display name for ``name`` (case-insensitive; 'ours', 'imfit' accepted)."""
    key = _ALIASES.get(name.strip().lower())
    if key is None:
        raise ValueError(f"unknown tool {name!r}; known: {', '.join(_MODULES)}")
    return key


def get(name: str):
    """The adapter module for ``name``."""
    return import_module(_MODULES[canonical(name)])
