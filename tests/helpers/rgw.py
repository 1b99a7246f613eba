"""A real S3 server for the tests: a throw-away single-node Ceph (radosgw) from ``shared/tools/start-rgw.sh``.

One cluster serves the whole test run. Under pytest-xdist every worker that needs it registers in a
folder of the run's shared temp dir, under a file lock: the first one starts the cluster (about 15 s),
the last one to leave stops it (``stop-rgw.sh --wipe``); a worker that comes later starts it again.
Ports are chosen free at start and the cluster lives in its own folder, so two test runs on one
machine (two checkouts, two people) never share or stop each other's cluster.

The Debian packages (``radosgw ceph-mon ceph-osd ceph-common uuid-runtime``) are required, not
optional: without them the tests that need the cluster fail and say what to install (``.ci/run``
installs them).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[3] / "shared" / "tools"
PACKAGES = "radosgw ceph-mon ceph-osd ceph-common uuid-runtime"
_BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool", "ceph-authtool", "uuidgen",
             "curl")


@dataclass(frozen=True)
class S3Endpoint:
    """An S3 origin on loopback and the keys that open it."""

    origin: str
    access_key: str
    secret_key: str
    kind: str  # "moto" | "rgw"

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.origin, region_name="us-east-1",
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}))


def missing_tools() -> str | None:
    """Why the cluster cannot start here (missing packages or scripts), else None."""
    absent = [b for b in _BINARIES if shutil.which(b) is None]
    if absent:
        return (f"Ceph RGW tests need Debian's packages ({', '.join(absent)} missing): "
                f"apt-get install -y --no-install-recommends {PACKAGES} curl")
    if not (TOOLS / "start-rgw.sh").is_file():
        return f"{TOOLS / 'start-rgw.sh'} is missing (the shared tools folder beside the checkout)"
    return None


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class RgwCluster:
    """The run's shared cluster, reference-counted by the processes using it (``acquire``/``release``)."""

    def __init__(self, shared: Path) -> None:
        self.folder = shared / "rgw"
        self.folder.mkdir(exist_ok=True)
        self.users = self.folder / "users"
        self.users.mkdir(exist_ok=True)
        self.state = self.folder / "state.json"
        # A short folder of its own: Ceph's admin sockets must fit in a unix socket path (108 bytes).
        digest = hashlib.sha256(str(self.folder).encode()).hexdigest()[:10]
        self.trial_dir = Path("/tmp") / f"hubgate-rgw-{digest}"

    def _lock(self):  # type: ignore[no-untyped-def]
        from filelock import FileLock

        return FileLock(str(self.folder / "lock"))

    def _env(self, ports: list[int]) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"RGW_TRIAL_DIR": str(self.trial_dir), "RGW_PORT": str(ports[0]), "MON_V2_PORT": str(ports[1]),
                    "MON_V1_PORT": str(ports[2]), "MEMSTORE_BYTES": str(4 * 1024**3)})
        return env

    def acquire(self, user: str) -> S3Endpoint:
        """Start the cluster unless it runs, and register ``user`` (one per process)."""
        with self._lock():
            state = json.loads(self.state.read_text()) if self.state.exists() else None
            ports = state["ports"] if state else _free_ports(3)
            proc = subprocess.run(["bash", str(TOOLS / "start-rgw.sh")], env=self._env(ports), capture_output=True,
                                  text=True, timeout=300)
            if proc.returncode != 0 and state is not None:  # its ports were taken meanwhile: new ones
                ports = _free_ports(3)
                proc = subprocess.run(["bash", str(TOOLS / "start-rgw.sh")], env=self._env(ports),
                                      capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"start-rgw.sh exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}")
            info = dict(line.split(":", 1) for line in proc.stdout.splitlines() if ":" in line)
            endpoint = S3Endpoint(info["S3 endpoint"].strip(), info["access key"].strip(), info["secret key"].strip(),
                                  "rgw")
            self.state.write_text(json.dumps({"ports": ports}))
            (self.users / user).touch()
            return endpoint

    def release(self, user: str) -> None:
        """Unregister ``user``; the last one out stops the cluster and deletes its data."""
        with self._lock():
            (self.users / user).unlink(missing_ok=True)
            if any(self.users.iterdir()):
                return
            ports = json.loads(self.state.read_text())["ports"] if self.state.exists() else _free_ports(3)
            subprocess.run(["bash", str(TOOLS / "stop-rgw.sh"), "--wipe"], env=self._env(ports), capture_output=True,
                           timeout=120)
            self.state.unlink(missing_ok=True)
            shutil.rmtree(self.trial_dir, ignore_errors=True)
