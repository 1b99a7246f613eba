"""An ASGI response that streams a byte range of a blob in large chunks read off the event loop.

Starlette's FileResponse reads 64 KiB at a time and reaches ~18% of nginx here; 8 MiB reads
in the threadpool reach nginx's rate (shared/research/perf-baselines.md §3). Memory stays at
one chunk per response whatever the file size. A client that goes away stops the reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

import anyio
from starlette.types import Receive, Scope, Send

CHUNK_SIZE = 8 * 1024 * 1024


class BlobResponse:
    def __init__(
        self,
        opener: Callable[[], BinaryIO],
        *,
        length: int,
        status: int,
        headers: list[tuple[bytes, bytes]],
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self._opener, self._length, self._chunk = opener, length, chunk_size
        self.status_code = status
        self.raw_headers = headers + [(b"content-length", str(length).encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope["method"] == "HEAD" or self._length == 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        async with anyio.create_task_group() as tg:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(watch_disconnect)
            await self._stream(send)
            tg.cancel_scope.cancel()

    async def _stream(self, send: Send) -> None:
        f = await anyio.to_thread.run_sync(self._opener)
        try:
            remaining = self._length
            while remaining > 0:
                chunk = await anyio.to_thread.run_sync(f.read, min(self._chunk, remaining))
                if not chunk:
                    # The store holds fewer bytes than the manifest says: abort the connection
                    # rather than end a short body the client might take as complete.
                    raise OSError(f"blob ended {remaining} bytes early")
                remaining -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
        finally:
            await anyio.to_thread.run_sync(f.close)
