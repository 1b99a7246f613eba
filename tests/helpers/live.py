"""hubgate's ASGI app on a real uvicorn in a background thread, with a request recorder in front.

The recorder is a tiny ASGI middleware: every HTTP request that reaches hubgate is appended to
a list as (method, raw path, query, status, response headers), so tests can prove how many
requests an HF client made (e.g. a warm ``hf_hub_download`` by sha makes none).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn


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


class LiveServer:
    """uvicorn.Server on 127.0.0.1 with an OS-assigned port, run in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.recorder = RequestRecorder(app)
        config = uvicorn.Config(
            self.recorder, host="127.0.0.1", port=0, log_level="warning", access_log=False,
            lifespan="on", timeout_graceful_shutdown=3,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="hubgate-uvicorn", daemon=True)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "LiveServer":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("uvicorn stopped during startup (see the log above)")
            if time.monotonic() > deadline:
                self._server.should_exit = True
                raise RuntimeError("uvicorn did not start in time")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout: float = 15) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5)

    @contextmanager
    def recording(self) -> Iterator[Window]:
        window = Window(self.recorder)
        try:
            yield window
        finally:
            window.close()
