"""An ASGI response that sends a byte range of a blob without copying it through Python.

A blob on the local disk is memory-mapped and handed to the server in 8 MiB windows: the kernel
copies each one from the page cache straight into the socket, which saves the read copy that a
read-then-write loop pays (nginx without sendfile pays it too). Before a window goes to the event
loop, a threadpool thread faults its pages in, so a cold file waits on the disk in a thread and
never on the loop; the next window gets a readahead hint meanwhile. Windows already sent are
dropped from the mapping, so the process maps about two windows whatever the file size.

Mapping is safe here because blobs are immutable: the store only ever replaces or removes a blob
file (rename, unlink), never truncates one in place, and a mapping outlives both. A blob whose
size on disk cannot hold the requested range is refused before the first byte.

Readers that are not plain files (S3 proxy mode) are streamed in 8 MiB reads from the threadpool,
the best safe Python variant measured in shared/research/perf-baselines.md §3. A client that goes
away stops both loops.
"""

from __future__ import annotations

import io
import mmap
import os
from typing import BinaryIO

import anyio
from starlette.types import Receive, Scope, Send

CHUNK_SIZE = 8 * 1024 * 1024
_PAGE = mmap.PAGESIZE


class BlobResponse:
    def __init__(
        self,
        reader: BinaryIO | None,
        *,
        length: int,
        status: int,
        headers: list[tuple[bytes, bytes]],
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self._reader, self._length, self._chunk = reader, length, chunk_size
        self.status_code = status
        self.raw_headers = headers + [(b"content-length", str(length).encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            if self._reader is None or scope["method"] == "HEAD" or self._length == 0:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await self._stream_until_disconnect(receive, send)
        finally:
            if self._reader is not None:
                await anyio.to_thread.run_sync(self._reader.close)

    async def _stream_until_disconnect(self, receive: Receive, send: Send) -> None:
        mapped = _file_position(self._reader)
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
                if mapped is None:
                    await self._stream(send)
                else:
                    await self._send_mapped(send, *mapped)
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the server should log the error itself, not a group of one
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _send_mapped(self, send: Send, fd: int, offset: int) -> None:
        end = offset + self._length
        mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        view = memoryview(mm)
        try:
            pos, sent_before = offset, None
            while pos < end:
                stop = min(pos + self._chunk, end)
                window = view[pos:stop]
                await anyio.to_thread.run_sync(_fault_in, window)
                if stop < end:
                    _advise(mm, mmap.MADV_WILLNEED, stop, min(stop + self._chunk, end))
                await send({"type": "http.response.body", "body": window, "more_body": stop < end})
                window.release()  # the server keeps its own view of what it still has to write
                if sent_before is not None:
                    # The server may still hold the window just sent; the one before is done.
                    _advise(mm, mmap.MADV_DONTNEED, *sent_before)
                sent_before, pos = (pos, stop), stop
        finally:
            view.release()
            try:
                mm.close()
            except BufferError:
                pass  # the server still holds a window (client gone mid-write): freed with it

    async def _stream(self, send: Send) -> None:
        assert self._reader is not None
        remaining = self._length
        while remaining > 0:
            chunk = await anyio.to_thread.run_sync(self._reader.read, min(self._chunk, remaining))
            if not chunk:  # short blob: abort rather than end a body that looks complete
                raise OSError(f"blob ended {remaining} bytes early")
            remaining -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})


def _file_position(reader: BinaryIO | None) -> tuple[int, int] | None:
    """(fd, offset) of a reader backed by a regular file, else None."""
    try:
        fd, offset = reader.fileno(), reader.tell()  # type: ignore[union-attr]
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
    return fd, offset


def _fault_in(window: memoryview) -> None:
    """Touch one byte per page so the pages are in memory and mapped (blocks on a cold disk)."""
    bytes(window[::_PAGE])


def _advise(mm: mmap.mmap, advice: int, start: int, stop: int) -> None:
    aligned = start - start % mmap.ALLOCATIONGRANULARITY
    mm.madvise(advice, aligned, stop - aligned)
