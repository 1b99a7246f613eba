"""An ASGI response that sends a byte range of a blob without copying it through Python.

Where the server offers the zero-copy send extension (``hubgate serve``'s protocol, api/protocol.py, on
plain TCP) and ``MAPPED_STREAMS`` local streams are already sending, a blob on the local disk is handed to
it whole and goes out with ``sendfile``: its bytes never enter the process and it takes no share of the
budget below. The first streams keep mapped windows, because a window written to a socket is the faster
path for one stream (loopback, 1 GiB: 3.0-3.7 GB/s from 8 MiB windows, 1.9-2.1 GB/s with sendfile) while
sendfile is the faster one for many (256 clients: 2.9 GB/s in all against 1.4 GB/s from 64 KiB windows,
whose per-piece Python work saturated the core). Otherwise:

A blob on the local disk is sent in memory-mapped 8 MiB windows (api/hub/mapped.py): the kernel
copies each one from the page cache straight into the socket, which saves the read copy a
read-then-write loop pays. A window whose pages are all in memory goes to the server at once; a
cold one is first faulted in by a threadpool thread (the disk is never waited on from the event
loop), with a readahead hint for the next. Each window is unmapped once sent, so memory does not
grow with the file.

Readers that are not plain files (S3 proxy mode) are streamed in reads from the threadpool, the best
safe Python variant measured in shared/research/perf-baselines.md §3. A client that goes away stops
both loops.

Memory is bounded per process, not per stream: the bytes the responses of a process hold at once are
its budget (``STREAM_BUDGET``, 16 MiB), shared by the responses streaming now. One client gets 8 MiB
windows (the fastest); 64 get 256 KiB each. A read (S3) costs about four times its size at its peak
(the read buffer, the copies urllib3 and botocore make, the bytes waiting on the socket), so reads
take a quarter of the share: 4 MiB for one client, 64 KiB each for 64 (8 MiB reads per stream took
64 streams to +180 MiB; with the shared budget they stay within +50 MiB of idle, tests/sync/
test_production_shape.py). Each window or read is sent before the next is taken, and ``send`` waits
while the client's socket is full: a slow client holds one window, never a growing queue.

``tune_malloc`` (called by ``hubgate serve``) keeps read buffers from piling up: by default glibc raises
its mmap threshold to the size of any large block freed (up to 32 MiB) and gives every thread of the
threadpool a heap of its own that never shrinks, so 64 S3-proxy streams left a replica 180 MiB larger
after they ended. With the threshold fixed just above the largest read (reads are reused heap memory,
never a fresh mapping faulted in page by page: that cost a single S3-proxy stream ~10%) and two heaps,
the same 64 streams stay within +25 MiB of idle.
"""

from __future__ import annotations

import ctypes
import io
import logging
import mmap
import os
from typing import BinaryIO

import anyio
import anyio.lowlevel
from starlette.types import Receive, Scope, Send

from api.hub.mapped import MappedWindow
from api.protocol import ZEROCOPY

CHUNK_SIZE = 8 * 1024 * 1024  # the largest window or read
MIN_CHUNK_SIZE = 64 * 1024
STREAM_BUDGET = 16 * 1024 * 1024  # bytes all the responses of a process hold at once
MAPPED_STREAMS = 16  # local streams at once sent from mapped windows (1 MiB or more each); the rest: sendfile
READ_COST = 4  # bytes of memory a read of one byte takes at its peak (module docstring)
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # mallopt(3)
_MALLOC_ARENAS = 2

log = logging.getLogger(__name__)
_mapping_works = True  # until the store's file system refuses a map once


class _Streams:
    """How many responses stream now (in this process: they all run on its event loop, no lock needed),
    and so how large each one's next window or read may be."""

    def __init__(self, budget: int = STREAM_BUDGET) -> None:
        self.budget, self.active = budget, 0

    def chunk(self, cost: int = 1) -> int:
        """The next window (``cost`` 1) or read (``cost`` READ_COST) of one response."""
        share = self.budget // (max(self.active, 1) * cost)
        return max(MIN_CHUNK_SIZE, min(CHUNK_SIZE, share - share % MIN_CHUNK_SIZE))


_streams = _Streams()  # one per process: the budget is the process's


def tune_malloc() -> dict[str, int]:
    """Fix glibc's mmap threshold just above the largest read (``M_MMAP_THRESHOLD``, which also stops glibc
    from raising it) and cap its heaps at two (``M_ARENA_MAX``). Returns the environment variables that do
    the same for child processes; empty where the C library is not glibc (nothing changes)."""
    threshold = CHUNK_SIZE // READ_COST + mmap.PAGESIZE
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return {}
    if not (mallopt(_M_MMAP_THRESHOLD, threshold) and mallopt(_M_ARENA_MAX, _MALLOC_ARENAS)):
        return {}
    return {"MALLOC_MMAP_THRESHOLD_": threshold, "MALLOC_ARENA_MAX": _MALLOC_ARENAS}


class BlobResponse:
    def __init__(
        self,
        reader: BinaryIO | None,
        *,
        length: int,
        status: int,
        headers: list[tuple[bytes, bytes]],
        chunk_size: int | None = None,
    ) -> None:
        """``chunk_size``: a fixed window/read size; None shares the process's budget (module docstring)."""
        self._reader, self._length, self._fixed_chunk = reader, length, chunk_size
        self.status_code = status
        self.raw_headers = headers + [(b"content-length", str(length).encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if self._reader is None or scope["method"] == "HEAD" or self._length == 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            mapped = _file_position(self._reader)
            zerocopy = (mapped is not None and _streams.active >= MAPPED_STREAMS and self._fixed_chunk is None
                        and ZEROCOPY in scope.get("extensions", {}))
            if not zerocopy:
                _streams.active += 1  # a zero-copy send holds no memory: it takes no share of the budget
            try:
                await self._stream_until_disconnect(receive, send, mapped, zerocopy)
            finally:
                if not zerocopy:
                    _streams.active -= 1
        finally:
            if self._reader is not None:
                await anyio.to_thread.run_sync(self._reader.close)

    async def _stream_until_disconnect(self, receive: Receive, send: Send, mapped: tuple[int, int] | None,
                                       zerocopy: bool) -> None:
        if mapped is not None and os.fstat(mapped[0]).st_size < mapped[1] + self._length:
            # The store holds fewer bytes than the manifest says: abort the connection rather
            # than end a short body the client might take as complete.
            raise OSError(f"blob is shorter than the {mapped[1] + self._length} bytes this response needs")
        try:
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(watch_disconnect)
                if zerocopy:  # the server sends the file itself (api/protocol.py: os.sendfile)
                    assert mapped is not None
                    await send({"type": ZEROCOPY, "file": mapped[0], "offset": mapped[1], "count": self._length,
                                "more_body": False})
                elif mapped is None or not _mapping_works:
                    await self._stream(send)
                else:
                    await self._send_mapped(send, *mapped)
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the server should log the error itself, not a group of one
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    @property
    def _chunk(self) -> int:
        return self._fixed_chunk or _streams.chunk()

    @property
    def _read_size(self) -> int:
        return self._fixed_chunk or _streams.chunk(READ_COST)

    async def _send_mapped(self, send: Send, fd: int, offset: int) -> None:
        """One mapping per piece of the response's share of the budget, released once sent and unmapped when
        the server lets go of it. (The server may hold a sent piece until the client takes it: with 8 MiB
        mappings sent in pieces, 64 slow clients kept a replica 143 MiB above idle, +18 MiB this way.)"""
        end, pos = offset + self._length, offset
        while pos < end:
            stop = min(pos + self._chunk, end)
            try:
                window = MappedWindow(fd, pos, stop)
            except OSError as exc:
                if pos != offset:
                    raise
                global _mapping_works
                if _mapping_works:
                    log.warning("cannot memory-map blob files (%s): sending them with plain reads", exc)
                _mapping_works = False  # a file system without mmap (some FUSE mounts): don't try again
                await self._stream(send)
                return
            try:
                if not window.resident():
                    await anyio.to_thread.run_sync(window.fault_in)  # the disk is waited on here, not on the loop
                    if stop < end:  # a cold file: let the kernel read what follows meanwhile
                        os.posix_fadvise(fd, stop, min(CHUNK_SIZE, end - stop), os.POSIX_FADV_WILLNEED)
                await send({"type": "http.response.body", "body": window.view, "more_body": stop < end})
                window.release()
            finally:
                window.close()
            pos = stop
            # ``send`` returns without suspending while the client's socket takes bytes: without this, one fast
            # client would keep the event loop to itself (measured: 0.5 s to first byte for an 8th client).
            await anyio.lowlevel.checkpoint()

    async def _stream(self, send: Send) -> None:
        """Reads in the threadpool, one ahead: the next read (from S3: a network round trip) runs while the
        client takes the previous chunk, so neither side waits for the other. At most two chunks are held."""
        assert self._reader is not None
        ready, chunks = anyio.create_memory_object_stream[bytes](0)

        async def read_ahead() -> None:
            async with ready:
                remaining = self._length
                while remaining > 0:
                    chunk = await anyio.to_thread.run_sync(self._reader.read, min(self._read_size, remaining))
                    if not chunk:  # short blob: abort rather than end a body that looks complete
                        raise OSError(f"blob ended {remaining} bytes early")
                    remaining -= len(chunk)
                    await ready.send(chunk)

        try:
            async with anyio.create_task_group() as tg, chunks:
                tg.start_soon(read_ahead)
                remaining = self._length
                async for chunk in chunks:
                    remaining -= len(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
                    await anyio.lowlevel.checkpoint()  # let the other responses and new requests run too
        except BaseExceptionGroup as group:  # the reader's error itself, as without the read-ahead
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise


def _file_position(reader: BinaryIO | None) -> tuple[int, int] | None:
    """(fd, offset) of a reader backed by a regular file, else None."""
    try:
        fd, offset = reader.fileno(), reader.tell()  # type: ignore[union-attr]
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
    return fd, offset
