"""What machine a benchmark ran on: CPU model and cores, GPU, torch, date (for results/)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import socket


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
