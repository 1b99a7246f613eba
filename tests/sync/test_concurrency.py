"""Two writers at once on the same rows, on SQLite and on PostgreSQL (a throwaway cluster, see conftest):
the workflow's transitions, and the inserts of rows that concurrent syncs and publishes share.

Each race is forced, not hoped for: both sides read before either writes (a barrier after the read),
or one side's insert is still uncommitted while the other inserts the same row.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from registry import audit, knownblobs, snapshots, workflow
from registry.db import make_engine, named_lock, session_scope
from registry.errors import InvalidTransitionError
from registry.models import Job, KnownBlob, MirrorRequest, Repo
from registry.settings import DatabaseSettings
from registry.types import RepoRef

from .conftest import PostgresServer

ADMIN = audit.Actor("alice", "admin")


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hubgate.db'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database()
    engine = make_engine(DatabaseSettings(url=url))
    yield engine
    engine.dispose()


def _request(engine: Engine, state: str = "pending") -> int:
    with session_scope(engine) as session:
        req = workflow.submit(session, repo=RepoRef.parse("model", "acme/race"), revision="main", commit="1" * 40,
                              allow_patterns=None, ignore_patterns=None, reason="test", actor=ADMIN,
                              findings=[], verdict="review", changes=None)
        req.state = state
        return req.pk  # type: ignore[return-value]


def _race(n: int, action: Callable[[int], Any]) -> list[Any]:
    """Run ``action(i)`` in ``n`` threads at once; return each result or exception."""
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        try:
            results[i] = action(i)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return results


@pytest.mark.parametrize("action", ["approve", "retry"])
def test_two_admins_at_once_queue_one_job(engine: Engine, action: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both read the request in a state that allows the action, then both try to move it: one wins."""
    pk = _request(engine, "pending" if action == "approve" else "failed")
    both_read = threading.Barrier(2, timeout=20)
    real_get = workflow.get

    def get_then_wait(session: Session, pk: int) -> MirrorRequest:
        req = real_get(session, pk)
        both_read.wait()
        return req

    monkeypatch.setattr(workflow, "get", get_then_wait)

    def act(i: int) -> str:
        with session_scope(engine) as session:
            getattr(workflow, action)(session, pk, audit.Actor(f"admin{i}", "admin"))
        return "ok"

    results = _race(2, act)
    assert sorted(map(type, results), key=str) == sorted([str, InvalidTransitionError], key=str), results
    assert "approved now; cannot" in str(next(r for r in results if isinstance(r, Exception)))
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Job)).one() == 1
        assert session.get(MirrorRequest, pk).state == "approved"  # type: ignore[union-attr]
        events = audit.query(session, target=f"request:{pk}", action=f"request.{action}")
        assert len(events) == 1


def test_concurrent_twins_of_shared_rows_both_succeed(engine: Engine) -> None:
    """One transaction has inserted the rows and not committed yet when the other inserts the same:
    the second waits for the first (PostgreSQL: on the row; SQLite: on the database lock), then finds them."""
    blobs = [knownblobs.Blob(f"{i:064x}", f"{i:040x}", i) for i in range(300)]
    repo = RepoRef.parse("model", "acme/shared")
    created = datetime(2024, 1, 1, tzinfo=timezone.utc)
    first_inserted = threading.Event()

    def first() -> int:
        with session_scope(engine) as session:
            row = snapshots.get_or_create_repo(session, repo, created_at=created)
            knownblobs.record(session, blobs[:200])
            first_inserted.set()
            time.sleep(1.0)  # the other one inserts now, against these uncommitted rows
            return row.pk  # type: ignore[return-value]

    def second() -> int:
        assert first_inserted.wait(20)
        with session_scope(engine) as session:
            knownblobs.record(session, blobs[100:])
            return snapshots.get_or_create_repo(session, repo, created_at=created).pk  # type: ignore[return-value]

    results = _race(2, lambda i: (first, second)[i]())
    assert all(isinstance(r, int) for r in results), results
    assert results[0] == results[1]
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(KnownBlob)).one() == 300
        assert session.exec(select(func.count()).select_from(Repo)).one() == 1
        by_sha, by_oid = knownblobs.lookup(session, sha256s=[b.sha256 for b in blobs[::7]],
                                           git_oids=[blobs[5].git_oid, "f" * 40])
    assert set(by_sha) == {b.sha256 for b in blobs[::7]} and list(by_oid) == [blobs[5].git_oid]


def test_named_lock_excludes_threads_and_connections(engine: Engine) -> None:
    inside: list[int] = []
    overlaps: list[int] = []

    def hold(i: int) -> None:
        with named_lock(engine, "publish model/acme/x@" + "1" * 40):
            inside.append(i)
            if len(inside) > 1:
                overlaps.append(i)
            time.sleep(0.05)
            inside.remove(i)

    assert _race(6, hold) == [None] * 6
    assert overlaps == []
