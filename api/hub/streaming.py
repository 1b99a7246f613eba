"""An ASGI response that streams a byte range of a blob in large chunks read off the event loop.

Starlette's FileResponse reads 64 KiB at a time and reaches ~18% of nginx here; 8 MiB reads
in the threadpool reach nginx's rate (shared/research/perf-baselines.md §3). Memory stays at
one chunk per response whatever the file size. A client that goes away stops the reads.
"""

from __future__ import annotations

from typing import BinaryIO

import anyio
from starlette.types import Receive, Scope, Send

CHUNK_SIZE = 8 * 1024 * 1024


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
        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(watch_disconnect)
            await self._stream(send)
            tg.cancel_scope.cancel()

    async def _stream(self, send: Send) -> None:
        assert self._reader is not None
        remaining = self._length
        while remaining > 0:
            chunk = await anyio.to_thread.run_sync(self._reader.read, min(self._chunk, remaining))
            if not chunk:
                # The store holds fewer bytes than the manifest says: abort the connection
                # rather than end a short body the client might take as complete.
                raise OSError(f"blob ended {remaining} bytes early")
            remaining -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
