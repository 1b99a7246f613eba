"""The floor for a resolve HEAD in Python: a bare Starlette app answering every path with fixed headers.

The headers are the ones hubgate answered for the benchmark file (X-Repo-Commit, ETag,
X-Linked-Etag, X-Linked-Size, Content-Length, Accept-Ranges, ...), passed in as JSON in
BARE_HEAD_HEADERS, so both servers send byte-for-byte the same kind of response. No lookup,
no auth, no middleware: what is left is uvicorn + Starlette routing.

    BARE_HEAD_HEADERS='[["x-repo-commit", "..."], ...]' uvicorn bare_head:app --loop uvloop --http httptools
"""

from __future__ import annotations

import json
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_SKIP = {"date", "server", "connection", "transfer-encoding"}
HEADERS = [(k.lower().encode("latin-1"), str(v).encode("latin-1"))
           for k, v in json.loads(os.environ.get("BARE_HEAD_HEADERS", "[]")) if k.lower() not in _SKIP]


async def resolve(request: Request) -> Response:
    response = Response(status_code=200)
    response.raw_headers = list(HEADERS)  # includes content-length = the file size; HEAD sends no body
    return response


app = Starlette(routes=[Route("/{rest:path}", resolve, methods=["HEAD"])])  # HEAD only: the body is never sent
