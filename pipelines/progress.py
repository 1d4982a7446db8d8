"""A dependency-free progress bar: galaxies done, galaxies/s, and the time left.

On a terminal it redraws one line; otherwise (logs, CI) it prints a line at most every
``interval`` seconds and a last one at the end.  The rate counts only galaxies processed in
this session, so a resumed run's estimate is not inflated by earlier shards.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (``--:--:--`` when unknown)."""
    if not seconds >= 0 or seconds == float("inf"):
        return "--:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """``Progress(total, done=already_done)``; call :meth:`update` with each chunk's size."""

    def __init__(self, total: int, done: int = 0, stream=None, enabled: bool = True,
                 interval: float = 5.0, width: int = 28, label: str = "galmoss-auto"):
        self.total, self.done, self.start_done = int(total), int(done), int(done)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interval, self.width, self.label = interval, width, label
        self.t0 = time.perf_counter()
        self._last_print = -float("inf")
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    @property
    def rate(self) -> float:
        """Galaxies per second in this session (0 before the first update)."""
        dt = time.perf_counter() - self.t0
        return (self.done - self.start_done) / dt if dt > 0 else 0.0

    def line(self) -> str:
        frac = self.done / self.total if self.total else 1.0
        filled = int(round(self.width * frac))
        rate = self.rate
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        return (f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{self.done}/{self.total} {rate:.2f} gal/s, left {format_duration(left)}")

    def update(self, n: int) -> None:
        self.done += int(n)
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.tty:
            self.stream.write("\r" + self.line())
            self.stream.flush()
        elif now - self._last_print >= self.interval or self.done >= self.total:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self._last_print = now

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
