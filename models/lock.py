"""An exclusive advisory file lock (``fcntl.flock``) shared by threads and processes.

Downloads and registry updates take it so that two ``galmoss-auto`` processes (or DDP ranks on one
file system) never write the same file at once.  The lock file is left in place: removing it
would let a third process lock a fresh inode while a second still holds the old one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

__all__ = ["file_lock", "LockTimeout"]


class LockTimeout(TimeoutError):
    """The lock was not obtained within the time allowed."""


@contextlib.contextmanager
def file_lock(path, timeout: float | None = None, poll: float = 0.05):
    """Hold an exclusive lock on ``path`` (created if needed) for the ``with`` block.

    ``timeout`` (s): give up with :class:`LockTimeout` after this long; ``None`` waits forever.
    Each call opens its own descriptor, so threads of one process exclude each other too.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(f"{path}: still locked by another process after {timeout:g} s")
                    time.sleep(poll)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
