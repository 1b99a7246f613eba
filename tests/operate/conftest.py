"""Fixtures for operating hubgate: ``hubgate serve`` as a real subprocess (its stderr kept for the log tests),
the ``hubgate`` CLI as a subprocess (remote mode, exit codes, progress output), a free loopback port.

Everything runs on 127.0.0.1; every process is started here and stopped by its own PID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

HUBGATE = str(Path(sys.executable).with_name("hubgate"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBGATE_", "HF_"))}
    env.update({"HUBGATE_DATA_DIR": str(data_dir), "HUBGATE_UPSTREAM_URL": "", "HF_HUB_DISABLE_TELEMETRY": "1",
                "NO_PROXY": "127.0.0.1,localhost", "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    env.update({f"HUBGATE_{k.upper()}": v for k, v in settings.items()})
    return env


def run(env: dict[str, str], *argv: str, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HUBGATE, *argv], env=env, capture_output=True, text=True, timeout=timeout, input=input)


@dataclass
class Served:
    url: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path
    extra: dict[str, object] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        return run({**self.env, **env}, *argv)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"hubgate serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"hubgate serve was not ready within {timeout}s")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """``serve(**settings)``: a started, ready ``hubgate serve`` subprocess on a free port."""
    started: list[Served] = []

    def start(data_dir: Path | None = None, **settings: str) -> Served:
        data = data_dir or tmp_path / f"data-{len(started)}"
        port = free_port()
        env = base_env(data, port=str(port), **settings)
        log_path = tmp_path / f"serve-{len(started)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([HUBGATE, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
        served = Served(f"http://127.0.0.1:{port}", env, proc, log_path, data)
        started.append(served)
        wait_ready(served.url, proc)
        return served

    yield start
    for s in reversed(started):
        s.stop()


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root
