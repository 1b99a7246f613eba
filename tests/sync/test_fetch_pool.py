"""Many small files of a sync are fetched in child processes (mirror/fetchpool.py): verified there, stored
in the same store, made durable and recorded by the parent's batch, exactly as when fetched in threads."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from fakes.fake_hub import FakeHub
from sqlmodel import Session, col, select

import mirror.upstream
from registry.models import KnownBlob

from .conftest import Hubgate, card, unique_repo, wait_for

N = 80  # above SyncOptions.pool_min_files (64): the small files go to the fetch processes


def _files(n: int, seed: str) -> dict[str, bytes]:
    # text, as the names say (random bytes can look like a pickle to the content scan)
    return {f"data/part-{i:03d}.txt": hashlib.sha256(f"{seed} {i}".encode()).hexdigest().encode() * (32 + i)
            for i in range(n)}


def _recorded(hg: Hubgate, sha256s: list[str]) -> set[str]:
    with Session(hg.svc.engine) as s:
        return set(s.exec(select(KnownBlob.sha256).where(col(KnownBlob.sha256).in_(sha256s))).all())


def _every_blob_file_is_whole(hg: Hubgate) -> None:
    for path in (hg.svc.store.driver.root / "blobs").rglob("*"):
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, path


def _fetch_processes(pid: int) -> list[psutil.Process]:
    """The fetch processes (started with "spawn"; not multiprocessing's resource tracker)."""
    return [c for c in psutil.Process(pid).children() if any("spawn_main" in a for a in c.cmdline())]


@pytest.mark.parametrize("processes", [2, 0])
def test_many_small_files_are_fetched_and_verified_in_child_processes(
        fake_hub: FakeHub, make_hubgate: Callable[..., Hubgate], monkeypatch: pytest.MonkeyPatch,
        processes: int) -> None:
    hg = make_hubgate(sync_fetch_processes=processes)
    repo = unique_repo("pool")
    files = {"README.md": card("mit"), **_files(N, repo)}
    commit = fake_hub.create_repo(repo, files)

    pk = hg.request(repo)["id"]

    def not_here(*args: object, **kwargs: object) -> None:
        raise mirror.upstream.UpstreamError("a file was fetched in the worker process itself")

    # Only this process's client is broken: the fetch processes build their own.
    monkeypatch.setattr(mirror.upstream.HubUpstream, "open", not_here)
    done = hg.approve_and_sync(pk)

    if processes == 0:  # threads in the worker: the broken client is the one used
        assert done["state"] == "failed" and "fetched in the worker process itself" in done["error"]
        return
    assert done["state"] == "available", done["error"]
    monkeypatch.undo()
    for path, data in files.items():
        r = hg.client.get(f"/{repo}/resolve/main/{path}")
        assert r.status_code == 200 and r.content == data, path
    shas = [f.sha256 for f in commit.files.values()]
    assert _recorded(hg, shas) == set(shas)  # the parent's batch recorded what the children stored
    _every_blob_file_is_whole(hg)
    assert not list((hg.svc.store.driver.root / ".tmp").iterdir()), "no staged temp file is left behind"
    progress = hg.get_request(done["id"])["progress"]
    assert (progress["files_done"], progress["bytes_done"]) == (len(files), sum(map(len, files.values())))


def test_a_corrupt_file_fails_the_sync_keeps_the_verified_ones_and_the_retry_fetches_only_it(
        fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("poolbad")
    files = {"README.md": card("mit"), **_files(N, repo)}
    commit = fake_hub.create_repo(repo, files)
    bad = commit.files["data/part-041.txt"]
    fake_hub.corrupt(bad.sha256)
    try:
        failed = hubgate.approve_and_sync(hubgate.request(repo)["id"])
    finally:
        fake_hub.corrupt(bad.sha256, on=False)
    assert failed["state"] == "failed"
    assert "data/part-041.txt" in failed["error"] and "mismatch" in failed["error"].lower(), failed["error"]
    assert not hubgate.svc.store.has(bad.sha256)
    others = [f.sha256 for f in commit.files.values() if f.sha256 != bad.sha256]
    # What was verified before the failure (the chunks in flight finish) is kept, recorded once durable: a blob
    # is in the store exactly when it has its row. Chunks not started yet are not fetched at all.
    kept = _recorded(hubgate, others)
    assert kept, "the files verified before the failure were dropped"
    assert {s for s in others if hubgate.svc.store.has(s)} == kept
    _every_blob_file_is_whole(hubgate)

    mark = fake_hub.log.mark()
    r = hubgate.api("POST", f"/requests/{failed['id']}/retry")
    assert r.status_code == 200, r.text
    hubgate.sync()
    assert hubgate.get_request(failed["id"])["state"] == "available"
    fetched = sorted(e.file for e in fake_hub.log.since(mark) if e.is_content_get)
    assert fetched == sorted(f.path for f in commit.files.values() if f.sha256 not in kept), "kept files refetched"
    assert "data/part-041.txt" in fetched
    assert hubgate.client.get(f"/{repo}/resolve/main/data/part-041.txt").content == files["data/part-041.txt"]


@pytest.mark.parametrize("server", ["moto", pytest.param("rgw", marks=pytest.mark.slow)])
def test_on_s3_the_fetch_processes_commit_each_blob_themselves(
        fake_hub: FakeHub, make_hubgate: Callable[..., Hubgate], server: str, request: pytest.FixtureRequest) -> None:
    from helpers.rgw import S3Endpoint

    s3: S3Endpoint = S3Endpoint(request.getfixturevalue("moto_s3"), "testing", "testing", "moto") \
        if server == "moto" else request.getfixturevalue("rgw_s3")
    bucket = f"pool-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    hg = make_hubgate(storage="s3", s3_bucket=bucket, s3_endpoint_url=s3.origin, s3_region="us-east-1",
                      s3_access_key_id=s3.access_key, s3_secret_access_key=s3.secret_key, s3_serve="proxy")
    repo = unique_repo("pools3")
    files = {"README.md": card("mit"), **_files(N, repo)}
    commit = fake_hub.create_repo(repo, files)
    assert hg.approve_and_sync(hg.request(repo)["id"])["state"] == "available"
    for path in ("README.md", "data/part-000.txt", "data/part-079.txt"):
        assert hg.client.get(f"/{repo}/resolve/main/{path}").content == files[path]
    shas = [f.sha256 for f in commit.files.values()]
    assert all(hg.svc.store.has(s) for s in shas)
    assert _recorded(hg, shas) == set(shas)


@pytest.mark.integration
def test_the_fetch_processes_of_a_killed_worker_leave_with_it(
        fake_hub: FakeHub, make_hubgate: Callable[..., Hubgate], tmp_path: Path) -> None:
    hg = make_hubgate()
    repo = unique_repo("poolkill")
    files = {"README.md": card("mit"), **_files(N, repo)}
    commit = fake_hub.create_repo(repo, files)
    for f in list(commit.files.values())[::2]:
        fake_hub.throttle(f.sha256, 2000)  # seconds per file: the sync is still running when it is killed
    pk = hg.request(repo)["id"]
    hg.approve(pk)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")} | hg.env
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("hubgate")), "worker"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        children: list[psutil.Process] = []

        def fetching() -> bool:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            children[:] = _fetch_processes(proc.pid)
            return len(children) == 2 and hg.get_request(pk)["state"] == "syncing"

        wait_for(fetching, timeout=60, interval=0.1, what="the worker's fetch processes to start")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        wait_for(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children),
                 timeout=10, interval=0.2, what="the fetch processes to leave")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for f in commit.files.values():
            fake_hub.throttle(f.sha256, None)


def test_a_batch_adopts_what_another_batch_of_the_store_handed_off_and_refuses_other_names(tmp_path: Path) -> None:
    from mirror.errors import StorageError
    from mirror.storage.local import LocalDriver

    child, parent = LocalDriver(tmp_path), LocalDriver(tmp_path)  # two processes' drivers of one store
    giving, taking = child.batch(), parent.batch()
    for key, data in (("blobs/aa/one", b"1" * 10), ("blobs/bb/two", b"2" * 20)):
        w = child.writer(key)
        w.write(data)
        giving.add(w, key)
    staged = giving.hand_off()
    assert sorted(k for _, k in staged) == ["blobs/aa/one", "blobs/bb/two"]
    assert all(t.startswith(".tmp/") for t, _ in staged)
    assert giving.flush() == 0, "what was handed off is no longer the giver's"
    assert child.stat("blobs/aa/one") is None, "nothing is visible before the adopting batch flushes"

    taking.adopt(staged)
    assert taking.flush() == 2
    assert parent.get_bytes("blobs/aa/one") == b"1" * 10 and parent.get_bytes("blobs/bb/two") == b"2" * 20
    assert not list((tmp_path / ".tmp").iterdir())

    for bad in [("../outside", "blobs/x"), (".tmp/../blobs/aa/one", "blobs/x"), ("blobs/aa/one", "blobs/x"),
                (".tmp/", "blobs/x"), (".tmp/ok", "../escape"), (".tmp/ok", ".tmp/other")]:
        with pytest.raises(StorageError):
            taking.adopt([bad])
    assert taking.flush() == 0, "a refused hand-off adds nothing"


def test_what_a_fetch_process_counts_reaches_the_worker_metrics_and_its_error_the_worker(tmp_path: Path) -> None:
    import socket

    from mirror.egress import EgressPolicy
    from mirror.fetchpool import FetchPool
    from mirror.settings import StorageSettings
    from mirror.telemetry import TELEMETRY, UPSTREAM_ERRORS, UPSTREAM_RETRIES
    from mirror.upstream import UpstreamError, UpstreamFile, UpstreamSpec
    from registry.types import RepoRef

    with socket.socket() as s:  # a port nothing listens on: every connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = UpstreamSpec(f"http://127.0.0.1:{port}", None, EgressPolicy(allow_private=True), 5.0, 2, 0.01, 0.01)
    pool = FetchPool(StorageSettings(backend="local", local_root=tmp_path / "store"), processes=1, threads=2)
    files = [UpstreamFile(f"f{i}.txt", 3, "a" * 40, None) for i in range(2)]
    before = TELEMETRY.snapshot()
    result = FetchPool.check(pool.submit(spec, RepoRef.parse("model", "acme/x"), "b" * 40, files, resume_attempts=0))

    assert isinstance(result.error, UpstreamError) and "unreachable" in str(result.error), result.error
    assert result.done == [] and result.staged == []
    after = TELEMETRY.snapshot()
    grew = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert grew == {(UPSTREAM_RETRIES, "ConnectError"): 4, (UPSTREAM_ERRORS, "ConnectError"): 2}, grew
