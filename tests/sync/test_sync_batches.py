"""A sync stores small files in batches (mirror/sync.py, mirror/storage/local.py ``LocalBatch``):
what it reports stored (a KnownBlob row, a file counted in the request's progress) is durably in the store,
whatever happens to the process; a batch that could not be made durable is never reported."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import Session, select

import mirror.storage.local
from fakes.fake_hub import FakeHub
from registry.models import KnownBlob

from .conftest import Hubgate, card, unique_repo, wait_for


CHUNK = 64 * 1024  # what a throttled fake hub sends before each pause (its body is then sent in pieces)


def _slow(n: int, seconds: float) -> tuple[dict[str, bytes], float]:
    """``n`` files of three throttled pieces each, and the rate at which the last piece comes ``seconds`` late."""
    return {f"slow/part-{i}.bin.txt": bytes([i]) * (2 * CHUNK + 1000) for i in range(n)}, CHUNK / (seconds / 2)


def _files(n: int, seed: str) -> dict[str, bytes]:
    return {f"shards/part-{i:03d}.txt": hashlib.sha256(f"{seed} {i}".encode()).digest() * 128 for i in range(n)}


def _rows(hg: Hubgate) -> set[str]:
    with Session(hg.svc.engine) as s:
        return set(s.exec(select(KnownBlob.sha256)).all())


def _intact(hg: Hubgate, sha256: str) -> bool:
    """The store holds the blob, and its bytes are the blob (not a partial or torn file)."""
    path = hg.svc.store.local_path(sha256)
    return path is not None and hashlib.sha256(path.read_bytes()).hexdigest() == sha256


def _every_blob_file_is_whole(hg: Hubgate) -> None:
    """No key of the store names a partial file: every blob file hashes to its own name."""
    blobs = hg.svc.store.driver.root / "blobs"
    for path in blobs.rglob("*"):
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, path


def test_a_batch_that_cannot_be_made_durable_is_not_recorded_and_the_retry_fetches_it(
        fake_hub: FakeHub, make_hubgate: Callable[..., Hubgate], monkeypatch: pytest.MonkeyPatch) -> None:
    hg = make_hubgate()
    repo = unique_repo("batchfail")
    fast, (slow, rate) = _files(12, "fast"), _slow(4, 0.8)
    commit = fake_hub.create_repo(repo, {"README.md": card("mit"), **fast, **slow})
    slow_files = [commit.files[p] for p in slow]
    for f in slow_files:  # fetched well after the first flush (0.25 s): they are in a later batch
        fake_hub.throttle(f.sha256, rate)
    pk = hg.request(repo)["id"]
    hg.approve(pk)

    real_flush, real_sync = mirror.storage.local.LocalBatch.flush, mirror.storage.local.LocalBatch._sync_all
    slow_shas = {f.sha256 for f in slow_files}
    failed: list[set[str]] = []  # the blobs of the batch whose flush failed
    calls = []

    def failing_flush(self):  # type: ignore[no-untyped-def]
        # The first flush of a batch holding a slow file fails in its first syncfs, so its files are never
        # renamed into place. Chosen by content, not by count: on a loaded box the fast files may take
        # more than one batch, and the test must still fail the batch that holds the slow ones.
        with self._lock:
            held = {os.path.basename(final) for _, final in self._staged}
        self._fail_next = not failed and bool(held & slow_shas)
        if self._fail_next:
            failed.append(held)
        return real_flush(self)

    def failing_sync(self):  # type: ignore[no-untyped-def]
        calls.append(1)
        if getattr(self, "_fail_next", False):
            self._fail_next = False
            raise OSError(5, "injected: the disk failed")
        return real_sync(self)

    monkeypatch.setattr(mirror.storage.local.LocalBatch, "flush", failing_flush)
    monkeypatch.setattr(mirror.storage.local.LocalBatch, "_sync_all", failing_sync)
    try:
        hg.worker.run_once()
    finally:
        for f in slow_files:
            fake_hub.throttle(f.sha256, None)
    doc = hg.get_request(pk)
    assert failed, "no batch held a slow file: the test proves nothing"
    assert doc["state"] == "failed" and "durable" in doc["error"], doc
    assert len(calls) >= 3, "the failed flush was the sync's first: no batch was recorded before it"

    rows = _rows(hg)
    assert rows, "the first batch should have been recorded"
    for sha in rows:  # a row is a promise that the blob is stored: never broken
        assert _intact(hg, sha), sha
    lost = [f for f in commit.files.values() if not hg.svc.store.has(f.sha256)]
    assert {f.sha256 for f in lost} >= failed[0], "a file of the failed batch was kept"
    for f in lost:  # fetched and verified, but its batch never became durable: not recorded either
        assert f.sha256 not in rows, f.path
    stored = [f for f in commit.files.values() if hg.svc.store.has(f.sha256)]
    assert doc["progress"]["files_done"] <= len(stored), (doc["progress"]["files_done"], len(stored))
    _every_blob_file_is_whole(hg)

    monkeypatch.setattr(mirror.storage.local.LocalBatch, "flush", real_flush)
    monkeypatch.setattr(mirror.storage.local.LocalBatch, "_sync_all", real_sync)
    mark = fake_hub.log.mark()
    assert hg.api("POST", f"/requests/{pk}/retry").status_code == 200
    hg.worker.run_once()
    assert hg.get_request(pk)["state"] == "available"
    fetched = {e.file for e in fake_hub.log.since(mark) if e.is_content_get}
    assert fetched == {f.path for f in lost}, fetched  # what was recorded is not fetched again


@pytest.mark.integration
def test_a_worker_killed_mid_batch_loses_nothing_it_reported_stored(
        fake_hub: FakeHub, make_hubgate: Callable[..., Hubgate], tmp_path: Path) -> None:
    hg = make_hubgate(worker_lease_seconds=3)
    repo = unique_repo("batchkill")
    fast, (slow, rate) = _files(150, "kill"), _slow(3, 8)
    commit = fake_hub.create_repo(repo, {"README.md": card("mit"), **fast, **slow})
    slow_files = [commit.files[p] for p in slow]
    for f in slow_files:  # the sync goes on for seconds after the fast files are recorded
        fake_hub.throttle(f.sha256, rate)
    pk = hg.request(repo)["id"]
    hg.approve(pk)

    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")} | hg.env
    env["HUBGATE_WORKER_LEASE_SECONDS"] = "3"
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("hubgate")), "worker"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        def some_recorded() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the worker stopped:\n{log_path.read_text()[-3000:]}")
            return hg.get_request(pk)["progress"]["files_done"] > 0

        wait_for(some_recorded, timeout=60, interval=0.02, what="a first batch to be recorded")
        proc.send_signal(signal.SIGKILL)  # mid-sync: fast files arriving or just flushed, slow ones in flight
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for f in slow_files:
            fake_hub.throttle(f.sha256, None)

    doc = hg.get_request(pk)
    assert doc["state"] == "syncing" and 0 < doc["progress"]["files_done"] < len(commit.files), doc
    rows = _rows(hg)
    for sha in rows:
        assert _intact(hg, sha), sha
    stored = [f for f in commit.files.values() if _intact(hg, f.sha256)]
    assert doc["progress"]["files_done"] <= len(stored), (doc["progress"]["files_done"], len(stored))
    assert {f.sha256 for f in commit.files.values() if f.sha256 in rows} <= {f.sha256 for f in stored}
    _every_blob_file_is_whole(hg)

    wait_for(hg.worker.run_once, timeout=20, interval=0.25, what="a second worker to take the job over")
    assert hg.get_request(pk)["state"] == "available"
