"""HUBGATE_SHUTDOWN_TIMEOUT_SECONDS: a slow download no longer holds SIGTERM forever.

Real processes: ``hubgate import`` a 32 MiB file, ``hubgate serve`` it on 127.0.0.1, a client that reads a
few KiB at a time keeps the download in flight, SIGTERM; the server must exit within the timeout plus a
small margin (uvicorn without ``timeout_graceful_shutdown`` waits for that client forever).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirror.worker import Worker

HUBGATE = Path(sys.executable).with_name("hubgate")
TIMEOUT_SECONDS = 2.0
MARGIN_SECONDS = 8.0  # interpreter exit, lifespan shutdown, a loaded CI machine
BIG_SIZE = 32 * 1024 * 1024  # far more than loopback socket buffers hold: the response stays in flight


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _environ(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")}
    env.update({
        "HUBGATE_DATA_DIR": str(data_dir),
        "HUBGATE_UPSTREAM_URL": "",  # a sealed instance: nothing is fetched
        "HUBGATE_WORKER_IN_PROCESS": "false",
        "HUBGATE_LOG_LEVEL": "info",
        "HUBGATE_SHUTDOWN_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
        **extra,
    })
    return env


def _safetensors(size: int) -> bytes:
    """A valid safetensors file (one U8 tensor) of exactly ``size`` bytes, so the content scan passes it."""
    header_len = 128
    n = size - 8 - header_len
    header = f'{{"w":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}'.encode().ljust(header_len, b" ")
    return header_len.to_bytes(8, "little") + header + os.urandom(n)


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path, deadline_seconds: float = 60) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"hubgate serve exited {proc.returncode} before answering:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"hubgate serve did not answer /healthz in {deadline_seconds}s:\n{log.read_text()[-4000:]}")


class SlowReader:
    """GET a file over a raw socket and read it a few KiB at a time, until told to stop or the server closes."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # keep the client's buffer small
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        self.head = b""
        while b"\r\n\r\n" not in self.head:
            chunk = self.sock.recv(4096)
            assert chunk, "the server closed the connection before the headers"
            self.head += chunk
        self.received = len(self.head.split(b"\r\n\r\n", 1)[1])
        self.closed_by_server = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                chunk = self.sock.recv(4096)
            except OSError:
                chunk = b""
            if not chunk:
                self.closed_by_server.set()
                return
            self.received += len(chunk)
            time.sleep(0.05)  # about 80 KiB/s: 32 MiB would take minutes

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(5)


@pytest.fixture
def served_big_file(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(_safetensors(BIG_SIZE))
    data_dir = tmp_path / "data"
    port = _free_port()
    env = _environ(data_dir, HUBGATE_PORT=str(port), HUBGATE_HOST="127.0.0.1")
    imported = subprocess.run([str(HUBGATE), "import", str(folder), "--repo", "acme/big"], env=env,
                              capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(HUBGATE), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(port, proc, log)
        yield proc, port, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.integration
@pytest.mark.slow
def test_sigterm_with_a_slow_download_in_flight_exits_within_the_shutdown_timeout(
    served_big_file: tuple[subprocess.Popen[bytes], int, Path],
) -> None:
    proc, port, log = served_big_file
    reader = SlowReader(port, "/acme/big/resolve/main/model.safetensors")
    try:
        assert reader.head.startswith(b"HTTP/1.1 200"), reader.head[:200]
        time.sleep(0.5)
        assert not reader.closed_by_server.is_set(), "the download ended before SIGTERM: not a slow download"
        received_before = reader.received
        assert received_before < BIG_SIZE // 2

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(TIMEOUT_SECONDS + MARGIN_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(f"hubgate serve still running {TIMEOUT_SECONDS + MARGIN_SECONDS}s after SIGTERM "
                        f"(HUBGATE_SHUTDOWN_TIMEOUT_SECONDS={TIMEOUT_SECONDS}):\n{log.read_text()[-4000:]}")
        elapsed = time.monotonic() - started
    finally:
        reader.close()
    # uvicorn shuts down cleanly, then re-raises the signal it caught: -SIGTERM is its normal exit status
    assert rc in (0, -signal.SIGTERM), log.read_text()[-4000:]
    # It waited for the download (graceful) up to the timeout, no longer: the client was still reading.
    assert elapsed >= TIMEOUT_SECONDS - 0.5, f"exited after {elapsed:.1f}s: the in-flight download got no grace"
    assert reader.received > received_before, "the client made no progress during the grace period"
    assert reader.received < BIG_SIZE


@pytest.mark.integration
def test_sigterm_stops_an_idle_worker_at_once(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(HUBGATE), "worker"], env=_environ(tmp_path / "data"), stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while b"running" not in log.read_bytes() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert proc.poll() is None, log.read_text()[-4000:]
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(TIMEOUT_SECONDS + MARGIN_SECONDS)
        assert rc == 0, log.read_text()[-4000:]
        assert time.monotonic() - started < TIMEOUT_SECONDS + MARGIN_SECONDS
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


class _StuckWorker(Worker):
    """A worker whose every thread is busy with a job that outlives any shutdown timeout."""

    def __init__(self) -> None:  # no engine or syncer: run_once is replaced
        self._stop = threading.Event()
        self._threads = []
        self.release = threading.Event()
        self.claims = 0

    def run_once(self) -> bool:
        self.claims += 1
        self.release.wait(60)
        return True


def test_worker_stop_waits_at_most_the_timeout_in_all_and_claims_nothing_more() -> None:
    worker = _StuckWorker()
    worker.start(3)
    time.sleep(0.2)
    started = time.monotonic()
    assert worker.stop(1.0) is False  # jobs still running at the deadline
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.0, elapsed  # one deadline for all threads, not 1 s per thread
    worker.release.set()
    for t in worker._threads:
        t.join(5)
    assert worker.claims == 3  # stopped: the released threads claimed no new job


def test_worker_stop_returns_true_when_the_running_jobs_finish_in_time() -> None:
    worker = _StuckWorker()
    worker.start(2)
    time.sleep(0.2)
    threading.Timer(0.3, worker.release.set).start()
    started = time.monotonic()
    assert worker.stop(5.0) is True
    assert time.monotonic() - started < 2.0
