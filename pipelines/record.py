"""The run record ``run.json``: what was run, with what, where, how fast, and what went wrong.

Timings are seconds.  ``read``, ``sigma``, ``mask`` and ``init`` are summed over galaxies (CPU
time in the worker processes, which run in parallel with the fit); ``fit`` and ``write`` are
wall time in the main process; ``total`` is the wall time of the whole run.
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from galmoss_auto.fitting.flags import Flag

__all__ = ["package_versions", "flag_counts", "catalog_counts", "write_record"]

_PACKAGES = ("galmoss-auto", "torch", "numpy", "astropy", "sep", "scipy", "galsim")


def package_versions() -> dict:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info(device) -> dict:
    import torch
    info = {"device": str(device), "cuda_available": torch.cuda.is_available(),
            "torch_threads": torch.get_num_threads()}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def flag_counts(flags) -> dict:
    """Galaxies with each flag bit set (only bits that occur), plus ``any``."""
    flags = np.asarray(flags, dtype=np.int64)
    out = {f.name: int(np.count_nonzero(flags & int(f))) for f in Flag}
    out = {k: v for k, v in out.items() if v}
    out["any"] = int(np.count_nonzero(flags))
    return out


def catalog_counts(catalog, processed: int, resumed: int) -> dict:
    """``run.json``'s ``counts``: galaxies, how many were processed now or read back from shards,
    how many were fitted, the flag counts and, per row, which mask/init method ran."""
    flags = np.asarray(catalog["flags"], np.int64)
    counts = {"galaxies": len(catalog), "processed_this_session": int(processed),
              "resumed_from_shards": int(resumed),
              "fitted": int(np.count_nonzero((flags & int(Flag.BAD_INPUT | Flag.FIT_FAILED)) == 0)),
              "flags": flag_counts(flags)}
    for col in ("mask_method", "init_method"):
        if col in catalog.colnames:
            values, n = np.unique(np.asarray(catalog[col]).astype(str), return_counts=True)
            counts[col] = {str(v): int(k) for v, k in zip(values, n) if v}
    return counts


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_record(path, *, config: dict, device, timings: dict, counts: dict, extra: dict) -> dict:
    """Write ``run.json`` and return its content."""
    record = {
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "config": config,
        "versions": package_versions(),
        "device": device_info(device),
        "timings_s": timings,
        "counts": counts,
        **extra,
    }
    record = _jsonable(record)
    Path(path).write_text(json.dumps(record, indent=2) + "\n")
    return record
