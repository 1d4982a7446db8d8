"""Hash-checked downloads of registry checkpoints into the cache (urllib only).

A download streams to ``<cache>/weights/<file>.part`` with a progress bar on stderr, checks the
byte count and sha256, and renames the part file onto ``<file>`` atomically, so the cache never
holds a corrupt or half-written checkpoint.  A per-file ``fcntl`` lock makes concurrent downloads
of one file (threads, processes, DDP ranks on one file system) fetch it once; the others find it
in place when they get the lock.  Under DDP only local rank 0 downloads; other ranks wait for the
file (or for rank 0's failure).

Sources, tried in order: ``$GALMOSS_AUTO_WEIGHTS_URL/<file>`` when that mirror is set, then the
entry's ``urls``.  ``file://`` URLs work too (a mirror on a shared disk).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .checkpoint import ChecksumError, sha256_file
from .lock import file_lock
from .registry import cache_weights_dir, lock_path

__all__ = ["DownloadError", "MIRROR_ENV", "mirror_urls", "how_to_install", "download",
           "download_rank"]

#: environment variable naming a mirror folder URL; files are fetched from ``$VAR/<file>``
MIRROR_ENV = "GALMOSS_AUTO_WEIGHTS_URL"
_CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """No source served the file intact (the message lists every attempt)."""


def mirror_urls(entry: dict) -> list[str]:
    """URLs to try for an entry: the ``$GALMOSS_AUTO_WEIGHTS_URL`` mirror first, then its own."""
    urls = []
    base = os.environ.get(MIRROR_ENV, "").strip()
    if base:
        urls.append(base.rstrip("/") + "/" + urllib.parse.quote(entry["file"]))
    for u in entry.get("urls", []):
        if u not in urls:
            urls.append(u)
    return urls


def how_to_install(entry: dict) -> str:
    """What a user can do when no URL serves an entry's file."""
    return (f"to install {entry['name']} without a download, get {entry['file']} (sha256 "
            f"{entry.get('sha256', '?')}) and run `galmoss-auto weights install PATH/{entry['file']}`, "
            f"or set ${MIRROR_ENV} to a folder URL (https://... or file:///...) that holds {entry['file']}")


def download_rank() -> int:
    """This process's local rank under DDP (0 when not distributed): ``$LOCAL_RANK``, else the
    initialised ``torch.distributed`` rank, else ``$RANK``."""
    if os.environ.get("LOCAL_RANK", "").strip():
        return int(os.environ["LOCAL_RANK"])
    try:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except ImportError:
        pass
    return int(os.environ.get("RANK", "0") or 0)


class _Progress:
    """A one-line progress bar (percent, MB, MB/s), redrawn at most 10 times a second."""

    def __init__(self, label: str, total: int | None, stream):
        self.label, self.total, self.stream = label, total, stream
        self.t0 = self.last = time.monotonic()

    def update(self, n: int, final: bool = False) -> None:
        now = time.monotonic()
        if self.stream is None or (not final and now - self.last < 0.1):
            return
        self.last = now
        rate = n / max(now - self.t0, 1e-6) / 1e6
        if self.total:
            frac = min(n / self.total, 1.0)
            bar = "#" * int(30 * frac)
            text = f"{self.label} [{bar:<30}] {100 * frac:5.1f}% {n / 1e6:.1f}/{self.total / 1e6:.1f} MB"
        else:
            text = f"{self.label} {n / 1e6:.1f} MB"
        self.stream.write(f"\r{text} {rate:.1f} MB/s" + ("\n" if final else ""))
        self.stream.flush()


def _fetch(url: str, part: Path, entry: dict, progress, timeout: float) -> None:
    """Stream ``url`` into ``part``; raise on HTTP errors, short transfers and hash mismatch."""
    req = urllib.request.Request(url, headers={"User-Agent": "galmoss-auto weights"})
    want = entry.get("size")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot reach the server: {exc.reason}") from exc
    with resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if total is not None and want is not None and total != want:
            raise DownloadError(f"the server offers {total} bytes but {entry['file']} has {want}")
        bar = _Progress(f"{entry['name']}", total or want, progress)
        h, n = hashlib.sha256(), 0
        with open(part, "wb") as f:
            while True:
                try:
                    block = resp.read(_CHUNK)
                except http.client.IncompleteRead as exc:
                    raise DownloadError(f"transfer truncated after {n + len(exc.partial)} of "
                                        f"{total or want} bytes") from exc
                except (OSError, http.client.HTTPException) as exc:
                    raise DownloadError(f"transfer failed after {n} bytes: {exc}") from exc
                if not block:
                    break
                f.write(block)
                h.update(block)
                n += len(block)
                bar.update(n)
            f.flush()
            os.fsync(f.fileno())
        bar.update(n, final=True)
    expected = total if total is not None else want
    if expected is not None and n != expected:
        raise DownloadError(f"transfer truncated: {n} of {expected} bytes")
    actual = h.hexdigest()
    if "sha256" in entry and actual != entry["sha256"]:
        raise ChecksumError(url, entry["sha256"], actual, what="download")


def _intact(path: Path, entry: dict) -> bool:
    return path.is_file() and ("sha256" not in entry or sha256_file(path) == entry["sha256"])


def _wait_for(dest: Path, entry: dict, failed: Path, timeout: float) -> Path:
    """Non-zero DDP ranks: wait until rank 0 has put an intact file in place, or has failed."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if dest.is_file():
            with file_lock(lock_path(dest)):          # rank 0 releases it after the rename
                if _intact(dest, entry):
                    return dest
        if failed.is_file() and failed.stat().st_mtime >= t0 - 1:
            raise DownloadError(f"rank 0 could not download {entry['file']}: {failed.read_text()}")
        time.sleep(0.5)
    raise DownloadError(f"waited {timeout:g} s for local rank 0 to download {dest}; it did not appear")


def download(entry: dict, *, dest_dir=None, force: bool = False, progress=None, timeout: float = 60.0,
             wait_timeout: float = 3600.0) -> Path:
    """Fetch an entry's file into the cache (``<home>/weights``) and return its path.

    Parameters
    ----------
    entry : dict
        Registry entry with ``name``, ``file``, ``sha256``, ``size`` and ``urls``.
    dest_dir : path, optional
        Destination folder (default :func:`~galmoss_auto.models.registry.cache_weights_dir`).
    force : bool
        Download again even when an intact copy is in place.
    progress : file or bool, optional
        Stream for the progress bar; ``True`` = stderr, ``False`` = none, ``None`` = stderr when
        it is a terminal.
    timeout : float
        Seconds for the connection and each read.
    wait_timeout : float
        Seconds a non-zero DDP rank waits for rank 0's download.

    Raises :class:`DownloadError` (listing every URL tried and why it failed, and how to install
    from a file) when no source served the file intact; nothing is left in the cache then.
    """
    if progress is None:
        progress = sys.stderr if sys.stderr.isatty() else None
    elif progress is True:
        progress = sys.stderr
    elif progress is False:
        progress = None
    dest = Path(dest_dir or cache_weights_dir()) / entry["file"]
    failed = lock_path(dest).with_suffix(".failed")
    if not force and _intact(dest, entry):
        return dest
    if download_rank() != 0:
        return _wait_for(dest, entry, failed, wait_timeout)
    urls = mirror_urls(entry)
    if not urls:
        raise DownloadError(f"{entry['name']} has no download URL; {how_to_install(entry)}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    t_request = time.time()
    with file_lock(lock_path(dest)):
        # someone else may have finished this file while we waited for the lock
        if _intact(dest, entry) and (not force or dest.stat().st_mtime >= t_request):
            return dest
        part = dest.with_name(dest.name + ".part")
        errors = []
        for url in urls:
            try:
                _fetch(url, part, entry, progress, timeout)
                os.replace(part, dest)
                failed.unlink(missing_ok=True)
                return dest
            except (DownloadError, ChecksumError, OSError) as exc:
                errors.append(f"{url}: {exc}")
            finally:
                part.unlink(missing_ok=True)
        message = "; ".join(errors)
        failed.parent.mkdir(parents=True, exist_ok=True)
        failed.write_text(message)
    raise DownloadError(f"could not download {entry['name']} ({entry['file']}): {message}. "
                        f"{how_to_install(entry)}")
