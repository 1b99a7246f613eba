"""hubgate's ASGI app on a real uvicorn in a background thread, with a request recorder in front.

The recorder is a tiny ASGI middleware: every HTTP request that reaches hubgate is appended to
a list as (method, raw path, query, status, response headers), so tests can prove how many
requests an HF client made (e.g. a warm ``hf_hub_download`` by sha makes none).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.server import ServerThread


@dataclass
class Record:
    method: str
    path: str  # raw (still percent-encoded), without the query
    query: str
    request_headers: list[tuple[str, str]] = field(default_factory=list)  # lower-cased names
    status: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)  # response headers, lower-cased names

    @property
    def call(self) -> tuple[str, str]:
        return self.method, self.path

    def header(self, name: str) -> str | None:
        """A response header."""
        return next((v for k, v in self.headers if k == name.lower()), None)

    def request_header(self, name: str) -> str | None:
        return next((v for k, v in self.request_headers if k == name.lower()), None)


class RequestRecorder:
    """ASGI middleware that records every HTTP request and the start of its response."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.records: list[Record] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path") or scope["path"].encode()
        rec = Record(scope["method"], raw.decode("latin-1").split("?", 1)[0],
                     scope.get("query_string", b"").decode("latin-1"),
                     [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])])
        with self._lock:
            self.records.append(rec)

        async def recording_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                rec.status = message["status"]
                rec.headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in message.get("headers", [])]
            await send(message)

        await self.app(scope, receive, recording_send)

    def mark(self) -> int:
        with self._lock:
            return len(self.records)

    def since(self, mark: int) -> list[Record]:
        with self._lock:
            return list(self.records[mark:])


class Window:
    """The requests recorded while a ``with server.recording()`` block ran."""

    def __init__(self, recorder: RequestRecorder) -> None:
        self._recorder = recorder
        self._start = recorder.mark()
        self._end: int | None = None

    def close(self) -> None:
        self._end = self._recorder.mark()

    @property
    def records(self) -> list[Record]:
        recs = self._recorder.since(self._start)
        return recs if self._end is None else recs[: self._end - self._start]

    @property
    def calls(self) -> list[tuple[str, str]]:
        return [r.call for r in self.records]


class LiveServer(ServerThread):
    """hubgate (behind a request recorder) on uvicorn, 127.0.0.1, an OS-assigned port, a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.recorder = RequestRecorder(app)
        super().__init__(self.recorder, name="hubgate-uvicorn", graceful_shutdown=3)

    @property
    def base_url(self) -> str:
        return self.url

    def start(self, timeout: float = 30) -> "LiveServer":
        super().start(timeout)
        return self

    @contextmanager
    def recording(self) -> Iterator[Window]:
        window = Window(self.recorder)
        try:
            yield window
        finally:
            window.close()
