"""Run an ASGI app on a real uvicorn bound to 127.0.0.1 (OS-assigned port) in a daemon thread."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn


class ServerThread:
    def __init__(self, app: Any, *, name: str = "fake-server", graceful_shutdown: int = 1) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on",
            timeout_graceful_shutdown=graceful_shutdown, timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=name, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> "ServerThread":
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

    def stop(self, timeout: float = 10) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(5)

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
