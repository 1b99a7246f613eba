"""Reading one chunk ahead: while the caller hashes and stores a chunk, the next one is read on a helper thread.

The read (a copy out of the page cache or the disk), the hashing and the write each release the GIL, so a
copy of a big file costs the slowest of them per chunk instead of the read plus the rest
(bench/bundle_bench.py measures the imports that use it). ``read_chunks`` is what the copy loops call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

ReadInto = Callable[[memoryview], "int | None"]

#: Below this many bytes a source is read in turn: a thread hop per chunk costs more than it saves.
READ_AHEAD_MIN = 2 * 1024 * 1024


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="read-ahead")


class ReadAhead:
    """Chunks of up to ``chunk_size`` bytes from ``readinto``, at most ``limit`` bytes in all (without it, to
    the end), the next one read on a helper thread while the caller has the current one. Two buffers take
    turns, so a chunk is valid until the caller asks for the next one. Use it as a context manager: leaving
    the block waits for a read still in flight, so the source can be closed safely after it."""

    def __init__(self, readinto: ReadInto, chunk_size: int, limit: int | None = None) -> None:
        self._readinto, self._chunk_size, self._left = readinto, chunk_size, limit
        self._views = (memoryview(bytearray(chunk_size)), memoryview(bytearray(chunk_size)))
        self._pending: Future[int | None] | None = None

    def _submit(self, i: int) -> None:
        want = self._chunk_size if self._left is None else min(self._chunk_size, self._left)
        self._pending = _pool().submit(self._readinto, self._views[i][:want]) if want > 0 else None

    def __iter__(self) -> Iterator[memoryview]:
        i = 0
        self._submit(i)
        while self._pending is not None:
            pending, self._pending = self._pending, None
            n = pending.result()
            if not n:
                return
            if self._left is not None:
                self._left -= n
            self._submit(1 - i)  # read on while the caller handles this chunk
            yield self._views[i][:n]
            i = 1 - i

    def close(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.exception()  # wait for it; its error, if any, is moot: the caller has stopped reading

    def __enter__(self) -> "ReadAhead":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_chunks(source: BinaryIO, chunk_size: int, *, size: int, limit: int | None = None,
                reuse: bool = True) -> Generator[bytes | memoryview, None, None]:
    """Up to ``limit`` bytes of ``source`` (all, without it) in chunks of at most ``chunk_size``.

    With ``reuse`` and a source that can ``readinto``, the chunks are views of reused buffers, each valid until
    the next is asked for (a fresh buffer per chunk costs page faults, on the project's VM more than the
    hashing); a source of ``size`` >= READ_AHEAD_MIN is then read one chunk ahead. Otherwise each chunk is
    fresh ``bytes`` the caller may keep. Close the generator (``contextlib.closing``) before the source."""
    readinto = getattr(source, "readinto", None) if reuse else None
    if readinto is not None and size >= READ_AHEAD_MIN:
        with ReadAhead(readinto, chunk_size, limit) as ahead:
            yield from ahead
        return
    buffer = memoryview(bytearray(chunk_size)) if readinto is not None else None
    left = limit
    while left is None or left > 0:
        want = chunk_size if left is None else min(chunk_size, left)
        data = buffer[: readinto(buffer[:want])] if buffer is not None else source.read(want)
        if not data:
            return
        if left is not None:
            left -= len(data)
        yield data
