"""The DB job queue on SQLite: concurrent claimers each get distinct jobs; leases expire and jobs return."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from fakes.fake_hub import FakeHub
from registry import jobs, workflow
from registry.db import make_engine, session_scope
from registry.models import Job
from registry.settings import DatabaseSettings

from .conftest import Hubgate, small_files, unique_repo, wait_for


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/jobs.db"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(DatabaseSettings(url=db_url))
    yield eng
    eng.dispose()


def enqueue(engine: Engine, n: int) -> list[int]:
    with session_scope(engine) as session:
        return [jobs.enqueue(session, "sync", {"request": i}).pk for i in range(n)]  # type: ignore[misc]


def claim_all_concurrently(engines: list[Engine], *, lease_seconds: float = 60) -> list[tuple[int, str]]:
    """Each engine's thread claims until the queue is empty, all starting at once."""
    barrier = threading.Barrier(len(engines))
    claims: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def claimer(engine: Engine, worker_id: str) -> None:
        try:
            barrier.wait()
            while True:
                with Session(engine) as session:
                    job = jobs.claim(session, worker_id, lease_seconds=lease_seconds)
                if job is None:
                    return
                assert job.lease_owner == worker_id and job.state == "running"
                with lock:
                    claims.append((job.pk, worker_id))  # type: ignore[arg-type]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(e, f"w{i}")) for i, e in enumerate(engines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return claims


def test_concurrent_claimers_on_sqlite_each_get_distinct_jobs(engine: Engine, db_url: str) -> None:
    pks = enqueue(engine, 80)
    # Threads sharing one engine (sessions from one pool) and threads with an engine each (as processes would).
    own = [make_engine(DatabaseSettings(url=db_url)) for _ in range(4)]
    try:
        claims = claim_all_concurrently([engine] * 4 + own)
    finally:
        for e in own:
            e.dispose()
    claimed = Counter(pk for pk, _ in claims)
    assert sorted(claimed) == sorted(pks)
    assert set(claimed.values()) == {1}, "a job was claimed twice"
    assert len({w for _, w in claims}) > 1
    with Session(engine) as session:
        for pk, worker in claims:
            job = session.get(Job, pk)
            assert job is not None and (job.state, job.lease_owner, job.attempts) == ("running", worker, 1)


def test_an_expired_lease_returns_the_job_to_the_queue(engine: Engine) -> None:
    [pk] = enqueue(engine, 1)
    with Session(engine) as s:
        first = jobs.claim(s, "crashing", lease_seconds=1.5)
    assert first is not None and first.pk == pk
    with Session(engine) as s:
        assert jobs.claim(s, "other", lease_seconds=30) is None  # leased
    with Session(engine) as s:
        assert jobs.heartbeat(s, pk, "crashing", lease_seconds=1.5) is True
    time.sleep(1.7)  # the crashing worker stops renewing
    with Session(engine) as s:
        second = jobs.claim(s, "other", lease_seconds=30)
    assert second is not None and second.pk == pk
    assert (second.lease_owner, second.attempts, second.state) == ("other", 2, "running")
    with Session(engine) as s:
        assert jobs.heartbeat(s, pk, "crashing", lease_seconds=30) is False  # it is not the crashed one's any more
        assert jobs.claim(s, "third", lease_seconds=30) is None
    # the first worker wakes up and reports: it must not overwrite the job the second one now runs
    with session_scope(engine) as s:
        assert jobs.complete(s, pk, "crashing") is False
        assert jobs.fail(s, pk, "crashing", "late error") is False
    with Session(engine) as s:
        job = s.get(Job, pk)
        assert job is not None and (job.state, job.lease_owner, job.last_error) == ("running", "other", None)
    with session_scope(engine) as s:
        assert jobs.complete(s, pk, "other") is True
    with Session(engine) as s:
        job = s.get(Job, pk)
        assert job is not None and (job.state, job.lease_owner) == ("done", None)


@pytest.mark.integration
def test_a_sync_left_by_a_dead_worker_is_finished_by_another(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("lease")
    fake_hub.create_repo(repo, small_files(60))
    pk = hubgate.request(repo)["id"]
    hubgate.approve(pk)
    engine = hubgate.svc.engine
    with Session(engine) as s:  # a worker claims the job, starts the sync, and dies
        dead = jobs.claim(s, "dead-worker", lease_seconds=2.0)
    assert dead is not None
    with session_scope(engine) as s:
        workflow.start(s, pk)
    assert hubgate.get_request(pk)["state"] == "syncing"
    assert hubgate.worker.run_once() is False  # still leased

    wait_for(hubgate.worker.run_once, timeout=10, interval=0.2, what="the expired job to be claimed")
    doc = hubgate.get_request(pk)
    assert doc["state"] == "available"
    with Session(engine) as s:
        job = s.get(Job, dead.pk)
        assert job is not None and (job.state, job.attempts) == ("done", 2)


@pytest.mark.integration
def test_a_job_that_lost_every_worker_fails_its_request(fake_hub: FakeHub, hubgate: Hubgate,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    repo = unique_repo("lost")
    fake_hub.create_repo(repo, small_files(61))
    pk = hubgate.request(repo)["id"]
    hubgate.approve(pk)
    engine = hubgate.svc.engine

    def claim_as(worker_id: str) -> Job | None:
        with Session(engine) as s:
            return jobs.claim(s, worker_id, lease_seconds=0.3)

    for i in range(3):  # three workers in a row die mid-sync
        job = wait_for(lambda: claim_as(f"dead-{i}"), timeout=5, what=f"claim {i}")
        with session_scope(engine) as s:
            workflow.start(s, pk)
    time.sleep(0.4)
    # failing the request breaks (say the DB drops): the job is not reaped either, so nothing is stranded
    real_fail = workflow.fail

    def broken_fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("connection lost")

    monkeypatch.setattr(workflow, "fail", broken_fail)
    with pytest.raises(RuntimeError):
        hubgate.worker._reap()
    with Session(engine) as s:
        reaped = s.get(Job, job.pk)
        assert reaped is not None and reaped.state == "running"
    assert hubgate.get_request(pk)["state"] == "syncing"
    monkeypatch.setattr(workflow, "fail", real_fail)
    hubgate.sync()
    doc = hubgate.get_request(pk)
    assert doc["state"] == "failed", (doc["state"], job.attempts)
    with Session(engine) as s:
        reaped = s.get(Job, job.pk)
        assert reaped is not None and reaped.state == "failed"
    assert hubgate.api("POST", f"/requests/{pk}/retry").status_code == 200


@pytest.mark.integration
def test_several_workers_sync_a_queue_each_request_exactly_once(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    from api.app import build_worker

    repos = [unique_repo(f"multi-{i}") for i in range(6)]
    commits = {r: fake_hub.create_repo(r, {f"file-{r}.txt": f"{r}\n".encode() * 100, "README.md": r.encode()})
               for r in repos}
    pks = [hubgate.request(r)["id"] for r in repos]
    mark = fake_hub.log.mark()
    for pk in pks:
        hubgate.approve(pk)
    workers = [build_worker(hubgate.svc) for _ in range(3)]
    for w in workers:
        w.poll_seconds = 0.1
        w.start(2)
    try:
        wait_for(lambda: all(hubgate.get_request(pk)["state"] in ("available", "failed") for pk in pks), timeout=60,
                 interval=0.1, what="every request to be synced")
    finally:
        for w in workers:
            w.stop()
    assert {hubgate.get_request(pk)["state"] for pk in pks} == {"available"}
    with Session(hubgate.svc.engine) as s:
        rows = s.exec(select(Job)).all()
    assert sorted((j.state, j.attempts) for j in rows) == [("done", 1)] * len(pks)
    for commit in commits.values():
        for f in commit.files.values():
            assert len(fake_hub.log.content_gets(f.sha256, mark)) == 1, f.path
    starts = hubgate.api("GET", "/audit", params={"action": "request.start", "limit": 1000}).json()
    assert sorted(e["target"] for e in starts) == sorted(f"request:{pk}" for pk in pks)
