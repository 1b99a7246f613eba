"""The job queue and a whole sync on a real PostgreSQL server (a throwaway cluster, see conftest)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from huggingface_hub import snapshot_download
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from fakes.fake_hub import FakeHub
from registry import jobs
from registry.db import make_engine, session_scope
from registry.settings import DatabaseSettings

from .conftest import Hubgate, PostgresServer, model_files, unique_repo

pytestmark = pytest.mark.integration


@pytest.fixture
def pg_engine(postgres_server: PostgresServer) -> Iterator[Engine]:
    engine = make_engine(DatabaseSettings(url=postgres_server.create_database()))
    assert engine.dialect.name == "postgresql"
    yield engine
    engine.dispose()


def _enqueue(engine: Engine, n: int) -> list[int]:
    with session_scope(engine) as session:
        return [jobs.enqueue(session, "sync", {"request": i}).pk for i in range(n)]  # type: ignore[misc]


def test_claim_skips_a_row_another_transaction_has_locked(pg_engine: Engine) -> None:
    first, second = _enqueue(pg_engine, 2)
    with pg_engine.connect() as holder:  # another claimer, mid-transaction, holds the oldest job
        holder.execute(text("SELECT pk FROM job WHERE pk = :pk FOR UPDATE"), {"pk": first})
        with Session(pg_engine) as session:
            session.execute(text("SET lock_timeout = '5s'"))  # without SKIP LOCKED this would wait, then fail
            started = time.monotonic()
            job = jobs.claim(session, "w2", lease_seconds=30)
            elapsed = time.monotonic() - started
        assert job is not None and job.pk == second and elapsed < 2
        holder.rollback()
    with Session(pg_engine) as session:
        job = jobs.claim(session, "w3", lease_seconds=30)
    assert job is not None and job.pk == first


def test_concurrent_claimers_each_get_distinct_jobs(pg_engine: Engine) -> None:
    pks = _enqueue(pg_engine, 120)
    workers = 8
    barrier = threading.Barrier(workers)
    claims: list[tuple[int, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def claimer(worker_id: str) -> None:
        try:
            barrier.wait()
            while True:
                with Session(pg_engine) as session:
                    job = jobs.claim(session, worker_id, lease_seconds=60)
                if job is None:
                    return
                with lock:
                    claims.append((job.pk, worker_id))  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    counts = Counter(pk for pk, _ in claims)
    assert sorted(counts) == sorted(pks) and set(counts.values()) == {1}
    assert len({w for _, w in claims}) > 1
    with pg_engine.connect() as conn:
        rows = conn.execute(text("SELECT pk, lease_owner, attempts, state FROM job")).all()
    owner = dict(claims)
    assert all((r.lease_owner, r.attempts, r.state) == (owner[r.pk], 1, "running") for r in rows)


def test_an_expired_lease_returns_the_job_on_postgresql(pg_engine: Engine) -> None:
    [pk] = _enqueue(pg_engine, 1)
    with Session(pg_engine) as s:
        assert jobs.claim(s, "dies", lease_seconds=1.5) is not None
    with Session(pg_engine) as s:
        assert jobs.claim(s, "other", lease_seconds=30) is None
    time.sleep(1.7)
    with Session(pg_engine) as s:
        job = jobs.claim(s, "other", lease_seconds=30)
    assert job is not None and (job.pk, job.attempts, job.lease_owner) == (pk, 2, "other")


def test_a_whole_sync_with_the_database_on_postgresql(fake_hub: FakeHub, postgres_server: PostgresServer,
                                                      make_hubgate: Callable[..., Hubgate],
                                                      tiny_files: dict[str, bytes], tmp_path: Path) -> None:
    url = postgres_server.create_database()
    hubgate = make_hubgate(database_url=url)
    assert hubgate.svc.engine.dialect.name == "postgresql"
    repo = unique_repo("pg")
    commit = fake_hub.create_repo(repo, model_files(tiny_files))
    doc = hubgate.request(repo)
    assert doc["commit"] == commit.sha
    assert hubgate.approve_and_sync(doc["id"])["state"] == "available"
    folder = Path(snapshot_download(repo, endpoint=hubgate.url, cache_dir=tmp_path / "hf", token=False))
    assert folder.name == commit.sha
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == {
        p: f.read_bytes() for p, f in commit.files.items()}
    events = hubgate.api("GET", "/audit", params={"target": f"request:{doc['id']}"}).json()
    assert [e["action"] for e in events] == ["request.finish", "request.start", "request.approve", "request.create"]
    # The rows really are in PostgreSQL, not in a SQLite file beside the store.
    with hubgate.svc.engine.connect() as conn:
        assert conn.execute(text("SELECT state FROM mirrorrequest WHERE pk = :pk"), {"pk": doc["id"]}).scalar() == \
            "available"
    assert not (hubgate.data_dir / "hubgate.db").exists()
