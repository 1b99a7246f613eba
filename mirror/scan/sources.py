"""Byte access to a stored file inside the scan child: random reads for headers, a stream for walkers.

Scanners never load a whole file: a safetensors or GGUF check reads a few headers with ``read_at``;
pickle and archive scanners read forward through ``stream()`` in bounded chunks.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO


class FileSource:
    """A ``base.Source`` over an open file: ``size`` and ``read_at``, never more than asked for."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self.size = size

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer at the end of the file; none past it)."""
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        if offset >= self.size or length == 0:
            return b""
        return os.pread(self._f.fileno(), min(length, self.size - offset), offset)

    def stream(self, offset: int = 0) -> BinaryIO:
        """A forward reader from ``offset`` (its own file position; reads do not disturb ``read_at``)."""
        f = open(os.dup(self._f.fileno()), "rb", buffering=0, closefd=True)  # noqa: SIM115 - returned open
        f.seek(offset)
        return io.BufferedReader(f, buffer_size=1 << 20)


class BytesSource:
    """A ``base.Source`` over bytes in memory: archive members small enough to hold, and tests."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.size = len(data)

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        return self._data[offset:offset + length]

    def stream(self, offset: int = 0) -> BinaryIO:
        return io.BytesIO(self._data[offset:])
