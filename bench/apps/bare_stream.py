"""The Python reference for sending a file: a bare Starlette app streaming BARE_FILE in 8 MiB reads.

``StreamingResponse`` over a sync generator: Starlette runs each ``read`` in the threadpool,
which is the best safe variant measured in shared/research/perf-baselines.md §3 (~2.8 GB/s on
the 2-core box). No lookup, no auth, no middleware: what is left is uvicorn + Starlette, so
hubgate's GET minus this row is hubgate's own cost per byte.

    BARE_FILE=/path/to/blob uvicorn bare_stream:app --loop uvloop --http httptools
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

PATH = os.environ.get("BARE_FILE", "")
CHUNK = int(os.environ.get("BARE_CHUNK", str(8 * 1024 * 1024)))


def _chunks() -> Iterator[bytes]:
    with open(PATH, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


async def stream(request: Request) -> StreamingResponse:
    size = os.stat(PATH).st_size
    return StreamingResponse(_chunks(), media_type="application/octet-stream",
                             headers={"content-length": str(size), "accept-ranges": "bytes"})


app = Starlette(routes=[Route("/{rest:path}", stream, methods=["GET"])])
