"""A ``hubgate worker`` process killed with SIGKILL mid-sync: its lease expires, another worker takes the
job over and finishes it without downloading the blobs the dead one had already stored."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import Session, col, select

from fakes.fake_hub import FakeHub
from helpers.content import safetensors_bytes
from registry.models import Job, KnownBlob

from .conftest import Hubgate, card, small_files, unique_repo, wait_for

pytestmark = pytest.mark.integration

BIG = 40 * 1024 * 1024
RATE = 4 * 1024 * 1024  # bytes/s for the big file: ten seconds, the small files take milliseconds


def test_a_killed_worker_is_replaced_and_stored_blobs_are_not_downloaded_again(
        fake_hub: FakeHub, make_hubgate: Callable[..., Hubgate], tmp_path: Path) -> None:
    hg = make_hubgate(worker_lease_seconds=3)
    repo = unique_repo("crash")
    big = safetensors_bytes(BIG, 32)
    files = {"README.md": card("mit"), "big.safetensors": big, **small_files(70, n=6)}
    commit = fake_hub.create_repo(repo, files)
    big_file = commit.files["big.safetensors"]
    small = [f for f in commit.files.values() if f.path != "big.safetensors"]
    pk = hg.request(repo)["id"]
    hg.approve(pk)
    fake_hub.throttle(big_file.sha256, RATE)
    mark = fake_hub.log.mark()

    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")} | hg.env
    env["HUBGATE_WORKER_LEASE_SECONDS"] = "3"
    env["HUBGATE_LOG_LEVEL"] = "info"  # its "worker … running" line is asserted at the end
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("hubgate")), "worker"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        def small_stored_and_big_in_flight() -> bool:
            if proc.poll() is not None or hg.get_request(pk)["state"] == "failed":
                raise AssertionError("the worker stopped or the sync failed")
            started = [e for e in fake_hub.log.content_gets(big_file.sha256, mark) if e.bytes_sent > 0]
            return bool(started) and all(hg.svc.store.has(f.sha256) for f in small) and recorded(small)

        def recorded(files: list) -> bool:  # type: ignore[type-arg]
            """Stored blobs are recorded (KnownBlob) once durable, in batches: what a resumed sync trusts."""
            with Session(hg.svc.engine) as s:
                return len(s.exec(select(KnownBlob.sha256).where(
                    col(KnownBlob.sha256).in_([f.sha256 for f in files]))).all()) == len(files)

        try:
            wait_for(small_stored_and_big_in_flight, timeout=60, interval=0.1, what="the small blobs to be stored")
        except AssertionError:
            raise AssertionError(f"worker log:\n{log_path.read_text()[-4000:]}") from None
        assert proc.poll() is None
        assert not hg.svc.store.has(big_file.sha256), "the big file finished too early for this test"
        assert hg.get_request(pk)["state"] == "syncing"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        fake_hub.throttle(big_file.sha256, None)

    engine = hg.svc.engine
    with Session(engine) as s:
        job = s.exec(select(Job)).one()
    assert job.state == "running" and f":{proc.pid}:" in (job.lease_owner or ""), job
    assert hg.get_request(pk)["state"] == "syncing"

    # A second worker claims the job once the dead one's lease has expired, and finishes it.
    wait_for(hg.worker.run_once, timeout=20, interval=0.25, what="the second worker to claim the job")
    doc = hg.get_request(pk)
    assert doc["state"] == "available", doc["error"]
    with Session(engine) as s:
        job = s.exec(select(Job)).one()
    assert (job.state, job.attempts) == ("done", 2)

    for f in small:  # stored before the crash: downloaded once, by the dead worker only
        assert len(fake_hub.log.content_gets(f.sha256, mark)) == 1, f.path
    big_gets = fake_hub.log.content_gets(big_file.sha256, mark)
    assert [(e.complete, e.bytes_sent < BIG) for e in big_gets] == [(False, True), (True, False)]
    served = hg.client.get(f"/{repo}/resolve/main/big.safetensors")
    assert hashlib.sha256(served.content).hexdigest() == big_file.sha256
    assert "worker" in log_path.read_text()
