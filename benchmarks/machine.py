"""What machine a benchmark ran on: CPU model and cores, GPU, torch, date; and the writer of
its results (``benchmarks/results/<tag>.json`` and ``.md``)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import socket
from pathlib import Path


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str = "cpu") -> dict:
    """JSON-ready description of this machine and software."""
    import torch

    info = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "gpu": None,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        info["gpu"] = torch.cuda.get_device_name(idx)
        info["cuda"] = torch.version.cuda
    return info


def slug(info: dict) -> str:
    """File stem for results: <date>-<host>-<device or GPU name>."""
    day = info["date"][:10]
    dev = info["gpu"] or info["device"]
    clean = lambda s: re.sub(r"[^A-Za-z0-9]+", "-", str(s)).strip("-")[:40]
    return f"{day}-{clean(info['host'])}-{clean(dev)}"


def write_results(folder, tag: str, record: dict, markdown: str) -> Path:
    """Write ``record`` to ``folder/<tag>.json`` and ``markdown`` to ``folder/<tag>.md``;
    returns the .json path.  Values JSON cannot hold are written as what they stand for: numpy
    scalars and arrays as numbers and lists, anything else (paths, dates) as text."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def plain(value):
        if hasattr(value, "tolist"):        # numpy scalars and arrays, torch tensors
            return value.tolist()
        return str(value)
    path = folder / f"{tag}.json"
    path.write_text(json.dumps(record, indent=1, default=plain) + "\n")
    (folder / f"{tag}.md").write_text(markdown)
    return path
