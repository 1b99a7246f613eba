"""A sync's progress as the request shows it: ``queued`` / ``planning`` / ``fetching`` / ``publishing``, reset by a
retry; upstream retries are logged with their cause as they happen."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from .conftest import free_port


@pytest.fixture
def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    from registry.db import make_engine
    from registry.settings import DatabaseSettings

    engine = make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'db.sqlite'}"))
    yield engine
    engine.dispose()


def _request(engine):  # type: ignore[no-untyped-def]
    from registry import workflow
    from registry.audit import Actor
    from registry.db import session_scope
    from registry.types import RepoRef

    with session_scope(engine) as session:
        req = workflow.submit(session, repo=RepoRef.parse("model", "acme/p"), revision="main", commit="a" * 40,
                              allow_patterns=None, ignore_patterns=None, reason="", actor=Actor("t", "admin"),
                              findings=[], verdict="review", changes=None)
        return req.pk


def test_phases_and_a_retry_starts_its_own_count(engine) -> None:  # type: ignore[no-untyped-def]
    from api.admin.schemas import Progress
    from registry import workflow
    from registry.audit import Actor
    from registry.db import session_scope

    admin = Actor("boss", "admin")
    pk = _request(engine)

    def phase() -> str:
        with session_scope(engine) as session:
            return Progress.of(workflow.get(session, pk)).phase

    assert phase() == ""
    with session_scope(engine) as session:
        workflow.approve(session, pk, admin)
    assert phase() == "queued"
    with session_scope(engine) as session:
        workflow.start(session, pk)
    assert phase() == "planning"  # listing the upstream tree: no totals yet
    with session_scope(engine) as session:
        workflow.set_progress(session, pk, files_done=1, files_total=3, bytes_done=10, bytes_total=300)
    assert phase() == "fetching"
    with session_scope(engine) as session:
        workflow.set_progress(session, pk, files_done=3, files_total=3, bytes_done=300, bytes_total=300)
    assert phase() == "publishing"
    with session_scope(engine) as session:
        workflow.fail(session, pk, "upstream went away")
        workflow.retry(session, pk, admin)
    with session_scope(engine) as session:
        req = workflow.get(session, pk)
        assert (req.files_done, req.files_total, req.bytes_done, req.bytes_total) == (0, 0, 0, 0)
    assert phase() == "queued"


def test_upstream_retries_are_logged_with_their_cause(caplog: pytest.LogCaptureFixture) -> None:
    from mirror.egress import EgressPolicy
    from mirror.telemetry import TELEMETRY, UPSTREAM_ERRORS, UPSTREAM_RETRIES
    from mirror.upstream import HubUpstream, UpstreamError
    from registry.types import RepoRef

    port = free_port()  # nothing listens there: connection refused
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # held, not listening: every connect is refused
        up = HubUpstream(f"http://127.0.0.1:{port}", egress=EgressPolicy(allow_private=True), max_retries=2,
                         backoff_seconds=0.01)
        before = TELEMETRY.snapshot()
        with caplog.at_level(logging.WARNING, logger="mirror.upstream"), pytest.raises(UpstreamError):
            up.resolve(RepoRef.parse("model", "acme/x"), "main")
        up.close()
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and "ConnectError" in retries[0] and "retry 1 of 2" in retries[0], retries
    after = TELEMETRY.snapshot()
    assert after.get((UPSTREAM_RETRIES, "ConnectError"), 0) - before.get((UPSTREAM_RETRIES, "ConnectError"), 0) == 2
    assert after.get((UPSTREAM_ERRORS, "ConnectError"), 0) - before.get((UPSTREAM_ERRORS, "ConnectError"), 0) == 1
