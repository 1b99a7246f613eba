"""How a long operation (import, export, import-bundle, verify, sync's fetch, gc) reports its progress.

The byte layer calls ``begin`` once per phase with the totals it knows, ``advance`` as bytes and files
are done (from any thread), and ``end`` at the end; what is shown (a live bar on a terminal, periodic
lines in a log) is the caller's ``Progress`` (api/progress.py). ``NO_PROGRESS`` shows nothing.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol


class Progress(Protocol):
    def begin(self, phase: str, *, total_bytes: int = 0, total_files: int = 0) -> None:
        """A new phase (``copying``, ``hashing``, …) of ``total_bytes`` / ``total_files`` (0: unknown)."""

    def advance(self, nbytes: int = 0, files: int = 0) -> None:
        """``nbytes`` more bytes and ``files`` more files done in the current phase (thread-safe)."""

    def end(self) -> None:
        """The operation is over (successful or not)."""


class _NoProgress:
    def begin(self, phase: str, *, total_bytes: int = 0, total_files: int = 0) -> None:
        pass

    def advance(self, nbytes: int = 0, files: int = 0) -> None:
        pass

    def end(self) -> None:
        pass


NO_PROGRESS: Progress = _NoProgress()


class CountingReader:
    """A reader that reports the bytes read through it (``read`` and ``readinto``: for sources copied with read loops)."""

    def __init__(self, inner: BinaryIO, progress: Progress) -> None:
        self._inner, self._progress = inner, progress

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        if data:
            self._progress.advance(len(data))
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self._inner.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self._progress.advance(n)
        return n

    def seekable(self) -> bool:
        return False  # a seek back would count bytes twice

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)
