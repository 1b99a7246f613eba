"""Progress of a long CLI operation on stderr: a live bar on a terminal, periodic plain lines otherwise.

On a TTY one line is redrawn at most five times a second: ``copying  1.2 GB / 4.0 GB  30%  210 MB/s
ETA 13s  12/40 files``. Not on a TTY (a log, a CI job, ``kubectl logs``) the same facts are written as
a plain line when a phase begins, every ``interval`` seconds, and when it ends, so a multi-hour
import-bundle is never silent.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_seconds(s: float) -> str:
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class TerminalProgress:
    """``mirror.progress.Progress`` drawn on ``stream`` (stderr by default)."""

    def __init__(self, label: str, *, stream: TextIO | None = None, interval: float = 10.0,
                 tty: bool | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval if not self.tty else 0.2
        self._lock = threading.Lock()
        self._phase, self._total_bytes, self._total_files = "", 0, 0
        self._bytes = self._files = 0
        self._started = self._last = time.monotonic()
        self._drawn = False

    def begin(self, phase: str, *, total_bytes: int = 0, total_files: int = 0) -> None:
        with self._lock:
            if self._phase:  # the previous phase's last word: its totals and time
                self._draw(force=True, final=True)
            self._close_line()
            self._phase, self._total_bytes, self._total_files = phase, total_bytes, total_files
            self._bytes = self._files = 0
            self._started = time.monotonic()
            self._draw(force=True)

    def advance(self, nbytes: int = 0, files: int = 0) -> None:
        with self._lock:
            self._bytes += nbytes
            self._files += files
            self._draw()

    def end(self) -> None:
        with self._lock:
            if self._phase:
                self._draw(force=True, final=True)
            self._close_line()
            self._phase = ""

    def _line(self, final: bool) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = self._bytes / elapsed
        parts = [f"{self.label}: {self._phase}"]
        if self._total_bytes:
            parts.append(f"{human_bytes(self._bytes)} / {human_bytes(self._total_bytes)} "
                         f"{100 * self._bytes / self._total_bytes:3.0f}%")
        elif self._bytes:
            parts.append(human_bytes(self._bytes))
        if self._bytes:
            parts.append(f"{human_bytes(rate)}/s")
        if final:
            parts.append(f"in {human_seconds(elapsed)}")
        elif self._total_bytes and rate > 0 and self._bytes < self._total_bytes:
            parts.append(f"ETA {human_seconds((self._total_bytes - self._bytes) / rate)}")
        if self._total_files or self._files:
            parts.append(f"{self._files}/{self._total_files or '?'} files")
        return "  ".join(parts)

    def _draw(self, *, force: bool = False, final: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        line = self._line(final)
        if self.tty:
            self.stream.write("\r\x1b[2K" + line[:200])
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def _close_line(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def for_cli(label: str, *, quiet: bool = False) -> "TerminalProgress | None":
    """The CLI's progress for an operation, or None with ``--quiet`` (the byte layer then shows nothing)."""
    return None if quiet else TerminalProgress(label)
