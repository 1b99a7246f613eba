"""Fixtures for the edge and egress tests: a real ``hubgate serve`` process, raw sockets, a canary.

* ``serve(**settings)``: ``hubgate serve --port 0`` as a child process (its own data dir, a tiny repo
  imported with ``hubgate import``, an admin token), read-back of its port from its log; stopped by PID.
* ``raw(server, data)``: one raw HTTP exchange on a fresh socket, bounded by a timeout.
* ``Canary``: a listening socket on 127.0.0.1 that records every connection made to it.

Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HUBGATE = Path(sys.executable).with_name("hubgate")
REPO = "acme/tiny"
FILES = {"config.json": b'{"model_type": "gpt2"}\n', "README.md": b"---\nlicense: mit\n---\n# tiny\n",
         "a.txt": b"a\n", "b.txt": b"b\n"}


def clean_env(**settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")}
    for name, value in settings.items():
        env[f"HUBGATE_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def run_cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HUBGATE), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class Served:
    proc: subprocess.Popen[str]
    port: int
    data_dir: Path
    token: str
    commit: str
    log: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def log_text(self) -> str:
        return "\n".join(self.log)


def _pump(stream: object, sink: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sink.append(line.rstrip("\n"))


def start_served(data_dir: Path, **settings: object) -> Served:
    env = clean_env(data_dir=data_dir, upstream_url="", worker_in_process=False, log_level="info", **settings)
    folder = data_dir / "src"
    folder.mkdir(parents=True)
    for name, data in FILES.items():
        (folder / name).write_bytes(data)
    imported = run_cli(env, "import", str(folder), "--repo", REPO)
    assert imported.returncode == 0, imported.stderr
    commit = re.search(r"@ ([0-9a-f]{40})", imported.stdout).group(1)  # type: ignore[union-attr]
    created = run_cli(env, "token", "create", "--role", "admin", "--name", "security-tests")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    proc = subprocess.Popen([str(HUBGATE), "serve", "--port", "0"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    log: list[str] = []
    threading.Thread(target=_pump, args=(proc.stdout, log), daemon=True).start()
    deadline = time.monotonic() + 60
    port = None
    while port is None:
        m = next((re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line) for line in list(log)
                  if "Uvicorn running on" in line), None)
        if m:
            port = int(m.group(1))
        elif proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
            raise RuntimeError("hubgate serve did not start:\n" + "\n".join(log))
        else:
            time.sleep(0.05)
    return Served(proc, port, data_dir, token, commit, log)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def make(**settings: object) -> Served:
        served = start_served(tmp_path / f"hubgate-{len(started)}", **settings)
        started.append(served)
        return served

    yield make
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One ``hubgate serve`` for a module: tree pages of 1 entry, a 2 s header timeout."""
    served = start_served(tmp_path_factory.mktemp("hubgate-serve"), tree_page_size=1, header_timeout_seconds=2)
    try:
        yield served
    finally:
        served.stop()


def raw(port: int, data: bytes, *, timeout: float = 10) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends back until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return read_response(s, timeout)


def read_response(s: socket.socket, timeout: float = 10) -> bytes:
    """One response (headers and, by Content-Length, body), or what came before the server closed."""
    s.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        head, sep, body = buf.partition(b"\r\n\r\n")
        if sep:
            m = re.search(rb"(?im)^content-length: *(\d+)", head)
            if m is None or len(body) >= int(m.group(1)):
                return buf
        try:
            chunk = s.recv(65536)
        except (TimeoutError, ConnectionResetError):
            return buf
        if not chunk:
            return buf
        buf += chunk
    return buf


def status_of(response: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3})", response)
    assert m, response[:200]
    return int(m.group(1))


def header(response: bytes, name: str) -> str | None:
    head = response.partition(b"\r\n\r\n")[0].decode("latin-1")
    m = re.search(rf"(?im)^{re.escape(name)}: *(.*?)\r?$", head)
    return m.group(1) if m else None


class Canary:
    """A listening socket on 127.0.0.1; ``connections`` counts every connection accepted."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    c = Canary()
    try:
        yield c
    finally:
        c.close()
