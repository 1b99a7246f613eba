"""Fixtures for the access tests (gated and private repos, grants, token lifecycle, rate limits, the audit chain).

Reuses tests/sync/conftest.py (the fake Hub, ``make_hubgate`` in-process instances, the throwaway PostgreSQL
cluster) and adds ``serve_process``: a real ``hubgate serve`` in a subprocess of its own, as an operator runs
it, so that two of them on one PostgreSQL are two replicas.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sync.conftest import (
    UPSTREAM_TOKEN,
    Hubgate,
    PostgresServer,
    _free_port,
    fake_hub,
    hf_cache,
    hubgate,
    make_hubgate,
    model_files,
    postgres_server,
    tiny_files,
    tiny_folder,
    unique_repo,
    wait_for,
)

HUBGATE = Path(sys.executable).with_name("hubgate")


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBGATE_", "HF_"))}
    return env | {"HF_HUB_DISABLE_TELEMETRY": "1"} | extra


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``hubgate ARGS`` in a subprocess with the instance's environment."""
    return subprocess.run([str(HUBGATE), *args], env=clean_env(env), capture_output=True, text=True, timeout=timeout)


@dataclass
class ServeProcess:
    name: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_serve(name: str, env: dict[str, str], log_dir: Path, timeout: float = 60) -> ServeProcess:
    """``hubgate serve`` on a free loopback port; returns once /healthz answers."""
    port = _free_port()
    env = env | {"HUBGATE_PORT": str(port), "HUBGATE_HOST": "127.0.0.1"}
    log = log_dir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(HUBGATE), "serve"], env=clean_env(env), stdout=out, stderr=subprocess.STDOUT)
    server = ServeProcess(name, env, proc, port, log)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"hubgate serve ({name}) exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"hubgate serve ({name}) did not answer in {timeout}s:\n{log.read_text()[-4000:]}")
        time.sleep(0.1)


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """``serve_process(name, env)``: a ``hubgate serve`` subprocess, stopped (by its PID) at the end."""
    started: list[ServeProcess] = []

    def start(name: str, env: dict[str, str]) -> ServeProcess:
        server = start_serve(name, env, tmp_path)
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()
