"""The audit log is a hash chain: an edited or removed entry is found (and named) by ``hubgate audit verify``;
concurrent appenders never fork it (SQLite and PostgreSQL); entries from before the upgrade are chained by it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine, select

from registry import audit
from registry.db import _alembic_config, make_engine, session_scope, upgrade
from registry.models import AuditEvent
from registry.settings import DatabaseSettings

from .conftest import PostgresServer


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'db.sqlite'}"))
    yield e
    e.dispose()


def _append(engine: Engine, n: int, actor: str = "alice", **detail: object) -> None:
    for i in range(n):
        with session_scope(engine) as session:
            audit.record(session, audit.Actor(actor, "admin", "10.0.0.1", token_id="abcd", request_id=f"req-{i}"),
                         "test.event", f"thing:{i}", n=i, **detail)


def _seqs(engine: Engine) -> list[int]:
    with Session(engine) as session:
        return [e.seq for e in session.exec(select(AuditEvent).order_by(AuditEvent.seq)).all()]  # type: ignore[misc]


def test_entries_link_into_one_chain_and_verify(engine: Engine) -> None:
    _append(engine, 5, note="ünïcode", nested={"b": [1, 2.5, None], "a": True})
    with Session(engine) as session:
        report = audit.verify(session)
        events = session.exec(select(AuditEvent).order_by(AuditEvent.seq)).all()
    assert report.ok, report.problem
    assert report.entries == len(events) == 6  # the upgrade's chain-start entry, then five
    assert events[0].action == audit.CHAIN_START and events[0].prev_hash == audit.GENESIS
    for before, after in zip(events, events[1:]):
        assert after.prev_hash == before.hash and after.seq == before.seq + 1  # type: ignore[operator]
    last = events[-1]
    assert (last.actor, last.token_id, last.request_id, last.source) == ("alice", "abcd", "req-4", "10.0.0.1")
    assert report.head_hash == last.hash


def test_several_entries_in_one_transaction_chain_in_order(engine: Engine) -> None:
    with session_scope(engine) as session:  # e.g. a request auto-approved as it is created
        for i in range(4):
            audit.record(session, audit.SYSTEM, "test.event", f"t:{i}")
    with Session(engine) as session:
        report = audit.verify(session)
        targets = [e.target for e in session.exec(select(AuditEvent).order_by(AuditEvent.seq)).all()][1:]
    assert report.ok and report.entries == 5 and targets == ["t:0", "t:1", "t:2", "t:3"]


def test_an_edited_entry_is_named(engine: Engine) -> None:
    _append(engine, 6)
    with engine.begin() as conn:  # someone with database access rewrites who did it
        conn.execute(text("UPDATE auditevent SET actor = 'mallory' WHERE seq = 4"))
    with Session(engine) as session:
        report = audit.verify(session)
    assert not report.ok and report.bad_seq == 4
    assert "seq 4" in report.problem and "altered" in report.problem  # type: ignore[operator]


def test_an_edited_entry_with_a_recomputed_hash_is_found_at_the_next_link(engine: Engine) -> None:
    _append(engine, 6)
    with Session(engine) as session:
        e = session.exec(select(AuditEvent).where(AuditEvent.seq == 3)).one()
        e.detail = {"n": 999}
        forged = audit.entry_hash(e)
    with engine.begin() as conn:
        conn.execute(text("UPDATE auditevent SET detail = :d, hash = :h WHERE seq = 3"),
                     {"d": json.dumps({"n": 999}), "h": forged})
    with Session(engine) as session:
        report = audit.verify(session)
    assert not report.ok and report.bad_seq == 3 and "seq 3" in report.problem  # type: ignore[operator]


def test_a_removed_entry_is_named(engine: Engine) -> None:
    _append(engine, 6)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM auditevent WHERE seq = 5"))
    with Session(engine) as session:
        report = audit.verify(session)
    assert not report.ok and report.bad_seq == 5
    assert "seq 5 is missing" in report.problem  # type: ignore[operator]


def test_removing_the_newest_entries_is_found_by_the_head(engine: Engine) -> None:
    _append(engine, 4)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM auditevent WHERE seq >= 4"))
    with Session(engine) as session:
        report = audit.verify(session)
    assert not report.ok and "removed" in report.problem  # type: ignore[operator]


def _concurrent_appends(engine: Engine, threads: int, each: int) -> None:
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            _append(engine, each, actor=f"writer-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(120)
    assert not any(t.is_alive() for t in pool) and not errors, errors


def test_concurrent_appenders_do_not_fork_the_chain_on_sqlite(engine: Engine) -> None:
    _concurrent_appends(engine, threads=6, each=15)
    assert _seqs(engine) == list(range(1, 6 * 15 + 2))
    with Session(engine) as session:
        report = audit.verify(session)
    assert report.ok, report.problem


@pytest.mark.integration
def test_concurrent_appenders_do_not_fork_the_chain_on_postgresql(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    engines = [make_engine(DatabaseSettings(url=url)) for _ in range(2)]  # two pools, as two replicas have
    try:
        assert engines[0].dialect.name == "postgresql"
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []

        def run(i: int) -> None:
            try:
                barrier.wait()
                _append(engines[i % 2], 20, actor=f"writer-{i}")
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        pool = [threading.Thread(target=run, args=(i,)) for i in range(8)]
        for t in pool:
            t.start()
        for t in pool:
            t.join(120)
        assert not errors, errors
        assert _seqs(engines[0]) == list(range(1, 8 * 20 + 2))
        with Session(engines[0]) as session:
            report = audit.verify(session)
        assert report.ok, report.problem
    finally:
        for e in engines:
            e.dispose()


def test_the_upgrade_chains_the_entries_already_there(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    old = create_engine(url)
    with old.begin() as conn:
        command.upgrade(_alembic_config(conn), "0002")
        for i in range(3):
            conn.execute(text("INSERT INTO auditevent (at, actor, action, target, source, detail) "
                              "VALUES (:at, 'cli:root', 'token.create', :t, 'cli', :d)"),
                         {"at": f"2026-11-0{i + 1} 10:00:00.000000", "t": f"token:{i}", "d": json.dumps({"i": i})})
    old.dispose()
    engine = make_engine(DatabaseSettings(url=url))  # upgrades to the newest migration
    try:
        _append(engine, 2)
        with Session(engine) as session:
            report = audit.verify(session)
            first = session.exec(select(AuditEvent).order_by(AuditEvent.seq)).first()
        assert report.ok, report.problem
        assert report.entries == 3 + 1 + 2 and report.chained_at_upgrade == 3
        assert first is not None and first.target == "token:0" and first.prev_hash == audit.GENESIS
        upgrade(engine)  # again: nothing changes
        with Session(engine) as session:
            assert audit.verify(session).entries == 6
    finally:
        engine.dispose()


def test_cli_verify_exits_3_naming_the_entry_and_export_writes_json_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from api.cli import main

    monkeypatch.setenv("HUBGATE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HUBGATE_WORKER_IN_PROCESS", "false")
    assert main(["token", "create", "--role", "admin", "--name", "root"]) == 0
    assert main(["token", "create", "--role", "reader", "--name", "ro", "--no-expiry"]) == 0
    capsys.readouterr()
    assert main(["audit", "verify"]) == 0
    assert "audit chain intact: 3 entries" in capsys.readouterr().out

    out = tmp_path / "audit.jsonl"
    assert main(["audit", "export", "--since", "1", "--out", str(out)]) == 0
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["seq"] for d in docs] == [2, 3] and [d["detail"]["name"] for d in docs] == ["root", "ro"]
    assert docs[0]["actor"].startswith("cli:") and docs[1]["prev_hash"] == docs[0]["hash"]
    capsys.readouterr()
    assert main(["audit", "export", "--since", "2000-01-01"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3

    engine = make_engine(DatabaseSettings(url=f"sqlite:///{(tmp_path / 'data' / 'hubgate.db').resolve()}"))
    with engine.begin() as conn:
        conn.execute(text("UPDATE auditevent SET detail = '{\"name\": \"root\", \"role\": \"reader\"}' WHERE seq = 2"))
    engine.dispose()
    assert main(["audit", "verify"]) == 3
    err = capsys.readouterr().err
    assert "seq 2" in err and "token.create" in err and "altered" in err
