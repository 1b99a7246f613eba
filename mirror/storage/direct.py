"""A file written in order that goes around the page cache once it is big (``O_DIRECT``).

A buffered write copies every byte into the page cache, and on the project's VM that copy is the
dearest step of ingesting a big blob: writing 1 GiB costs the writing thread 0.3-1.5 s of kernel CPU
(new page-cache pages are slow to come by in the guest), against 0.02-0.06 s with ``O_DIRECT``, which
hands the bytes to the disk from an aligned buffer of our own. The CPU that frees goes to hashing.

So a file is written as usual until a write brings it to ``DIRECT_MIN`` bytes (small files never leave
the page cache); from there the rest goes through a page-aligned staging buffer, in ``STAGE_SIZE`` writes
at aligned offsets; the last partial block, at ``flush``, is written buffered again. ``fsync`` is still what makes the bytes
durable (a direct write may sit in the disk's own cache). A file system that refuses ``O_DIRECT`` (or a
platform without it) is written buffered, as before: nothing depends on it but speed.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
from typing import BinaryIO

log = logging.getLogger(__name__)

#: Files below this size are written through the page cache only.
DIRECT_MIN = 16 * 1024 * 1024
#: One direct write: a multiple of every disk's logical block size (512 or 4096 bytes).
STAGE_SIZE = 8 * 1024 * 1024
ALIGN = 4096

_O_DIRECT = getattr(os, "O_DIRECT", 0)


def _write(fd: int, data: memoryview) -> int:
    return os.write(fd, data)


class DirectFile:
    """``open(path, mode)`` (``"xb"`` or ``"ab"``) for a file written front to back: ``write``, ``flush``,
    ``fileno``, ``close``, ``tell``. From the write that brings the file to ``DIRECT_MIN`` bytes on, writes
    bypass the page cache where the file system allows it (``direct=False``: never)."""

    def __init__(self, path: str | os.PathLike[str], mode: str, *, direct: bool = True) -> None:
        self._f: BinaryIO = open(path, mode)  # type: ignore[assignment]  # noqa: SIM115 - closed by close()
        self._pos = os.fstat(self._f.fileno()).st_size if "a" in mode else 0
        self._stage: mmap.mmap | None = None
        self._fill = 0
        self._tried = not (direct and _O_DIRECT)  # turned off, or a platform without O_DIRECT: never tries
        self.direct_bytes = 0  # written around the page cache (for tests and benches)

    def write(self, data: bytes | memoryview) -> int:
        n = len(data)
        if self._stage is None:
            if self._tried or self._pos + n < DIRECT_MIN:
                self._f.write(data)
                self._pos += n
                return n
            data = self._go_direct(memoryview(data).cast("B"))
            if self._stage is None:
                return n
        view = memoryview(data).cast("B")
        while view:
            k = min(len(view), STAGE_SIZE - self._fill)
            self._stage[self._fill:self._fill + k] = view[:k]
            self._fill += k
            view = view[k:]
            if self._fill == STAGE_SIZE:
                self._drain(STAGE_SIZE)
                if self._stage is None:  # direct writes refused: the rest through the page cache
                    self._f.write(view)
                    self._pos += len(view)
                    break
        return n

    def _go_direct(self, view: memoryview) -> memoryview:
        """Write buffered up to the next aligned offset, then switch the descriptor to O_DIRECT; returns
        what is left of ``view``. On a file system that refuses, everything stays buffered."""
        self._tried = True
        head = min(len(view), -self._pos % ALIGN)
        if head:
            self._f.write(view[:head])
            self._pos += head
            view = view[head:]
        self._f.flush()
        fd = self._f.fileno()
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | _O_DIRECT)
        except OSError as exc:
            log.debug("direct I/O refused (%s): writing through the page cache", exc)
            self._f.write(view)
            self._pos += len(view)
            return view[:0]
        self._stage = mmap.mmap(-1, STAGE_SIZE)  # page-aligned, as O_DIRECT needs
        return view

    def _drain(self, n: int) -> None:
        """Write the first ``n`` (aligned) staged bytes directly."""
        assert self._stage is not None
        try:
            done = _write(self._f.fileno(), memoryview(self._stage)[:n])
        except OSError as exc:
            if exc.errno != errno.EINVAL or self.direct_bytes:
                raise
            # The file system took the flag but refuses the write (a larger alignment, some network and FUSE
            # file systems): everything goes through the page cache from here.
            log.debug("direct write refused (%s): writing through the page cache", exc)
            done = -1
        if done < 0:  # outside the handler: its traceback no longer holds a view of the staging buffer
            self._leave_direct()
            return
        if done != n:  # a short direct write: the disk is full, or the file at its limit
            raise OSError(errno.ENOSPC, f"short write: {done} of {n} bytes")
        self._pos += n
        self.direct_bytes += n
        rest = self._fill - n
        if rest:
            self._stage.move(0, n, rest)
        self._fill = rest

    def _leave_direct(self) -> None:
        """Clear O_DIRECT and write what is staged through the page cache; later writes are buffered."""
        assert self._stage is not None
        stage, fill = self._stage, self._fill
        self._stage, self._fill = None, 0
        fd = self._f.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)
        written = 0
        while written < fill:
            done = _write(fd, memoryview(stage)[written:fill])
            if done <= 0:
                raise OSError(errno.ENOSPC, f"short write: {written} of {fill} bytes")
            written += done
            self._pos += done
        stage.close()

    def flush(self) -> None:
        """Write everything staged: the aligned part directly, the last partial block through the page cache
        (the descriptor leaves O_DIRECT). Later writes are buffered."""
        if self._stage is None:
            self._f.flush()
            return
        aligned = self._fill - self._fill % ALIGN
        if aligned:
            self._drain(aligned)
            if self._stage is None:  # refused: all of it went through the page cache
                return
        self._leave_direct()  # the last partial block

    @property
    def direct(self) -> bool:
        """Writes bypass the page cache now."""
        return self._stage is not None

    def tell(self) -> int:
        return self._pos + self._fill

    def fileno(self) -> int:
        return self._f.fileno()

    def close(self, *, keep: bool = True) -> None:
        """Close, writing what is staged first (``keep=False``: drop it, the file is being thrown away)."""
        try:
            if keep:
                self.flush()
        finally:
            if self._stage is not None:
                self._stage.close()
                self._stage, self._fill = None, 0
            self._f.close()

    @property
    def closed(self) -> bool:
        return self._f.closed
