"""hubgate in its production shape, as real processes on loopback: N ``hubgate serve`` replicas (worker
off) and M ``hubgate worker`` processes over one PostgreSQL database and one S3 bucket.

Every process is a child in its own process group with its own log file, started from the installed
``hubgate`` script with the same environment an operator would set (shared database, bucket, secret
and signing keys), and stopped by its PID: SIGTERM, then SIGKILL. Tests kill and restart them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HUBGATE = Path(sys.executable).with_name("hubgate")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS: anonymous and file-backed pages it maps), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    port: int | None = None
    popen: subprocess.Popen | None = None  # type: ignore[type-arg]
    starts: int = 0

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> "Proc":
        self.starts += 1
        with open(self.log, "ab") as log:
            log.write(f"\n--- start {self.starts}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        if self.port is not None:
            self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.tail()}")

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def rss(self) -> int:
        return rss_bytes(self.pid) if self.alive() else 0

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if not self.alive():
            return
        assert self.popen is not None
        os.killpg(self.popen.pid, sig)
        self.popen.wait(30)

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.popen is not None
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
            self.popen.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        except ProcessLookupError:
            pass

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@dataclass
class Cluster:
    folder: Path
    env: dict[str, str]  # HUBGATE_* shared by every process
    replicas: list[Proc] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)
    admin_token: str = ""

    def _proc(self, name: str, argv: list[str], port: int | None = None, **settings: str) -> Proc:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")} | self.env | settings
        env["HUBGATE_DATA_DIR"] = str(self.folder / name)  # private scratch; state is in the DB and the bucket
        return Proc(name, [str(HUBGATE), *argv], env, self.folder / f"{name}.log", port)

    def add_replica(self, **settings: str) -> Proc:
        port = free_port()
        p = self._proc(f"replica{len(self.replicas)}", ["serve"], port, HUBGATE_PORT=str(port),
                       HUBGATE_WORKER_IN_PROCESS="false", **settings)
        self.replicas.append(p.start())
        return p

    def add_worker(self, **settings: str) -> Proc:
        p = self._proc(f"worker{len(self.workers)}", ["worker"], **settings)
        self.workers.append(p.start())
        return p

    def cli(self, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")} | self.env
        env["HUBGATE_DATA_DIR"] = str(self.folder / "cli")
        proc = subprocess.run([str(HUBGATE), *args], env=env, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"hubgate {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout

    def api(self, replica: int, method: str, path: str, **kwargs: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        return httpx.request(method, f"{self.replicas[replica].url}/registry/v1{path}", headers=headers,
                             timeout=60, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        for p in [*self.workers, *self.replicas]:
            p.stop()
