"""The pieces, without servers: who may read what (AccessSnapshot), token buckets, token hashing and expiry,
last-used at most once a minute, and the two-person rule."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from api.ratelimit import Limits, RateLimitedError, RateLimiter
from registry import access, audit, tokens, workflow
from registry.access import AccessSnapshot, GatedRepoAuthRequiredError, GatedRepoError
from registry.db import _alembic_config, make_engine, session_scope
from registry.errors import RepoNotFoundError
from registry.models import ApiToken, utcnow
from registry.settings import DatabaseSettings
from registry.types import RepoRef

KEY = tokens.derive_key(b"k" * 44)
ADMIN = audit.Actor("root", "admin")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'db.sqlite'}"))
    yield e
    e.dispose()


# -- access decisions


def _snapshot() -> AccessSnapshot:
    return AccessSnapshot(
        epoch=3,
        visibility={("model", "acme/gated"): "gated", ("model", "acme/private"): "private"},
        grants={("model", "acme/gated"): frozenset({"token:t1", "group:ml"}),
                ("model", "acme/private"): frozenset({"token:t2"})},
        groups={"t3": frozenset({"ml"})},
    )


@pytest.mark.parametrize(("repo", "token_id", "role", "outcome"), [
    ("acme/public", None, None, None),
    ("acme/gated", None, None, GatedRepoAuthRequiredError),
    ("acme/gated", "t9", "reader", GatedRepoError),
    ("acme/gated", "t1", "reader", None),  # granted directly
    ("acme/gated", "t3", "reader", None),  # through the group ml
    ("acme/gated", "t9", "admin", None),
    ("acme/private", None, None, RepoNotFoundError),
    ("acme/private", "t1", "reader", RepoNotFoundError),
    ("acme/private", "t3", "requester", RepoNotFoundError),
    ("acme/private", "t2", "reader", None),
    ("acme/private", "t9", "admin", None),
])
def test_who_may_read_what(repo: str, token_id: str | None, role: str | None, outcome: type | None) -> None:
    snap = _snapshot()
    key = ("model", repo)
    if outcome is None:
        snap.check(key, token_id, role)
        assert snap.may_read(key, token_id, role)
    else:
        with pytest.raises(outcome) as info:
            snap.check(key, token_id, role)
        assert not snap.may_read(key, token_id, role)
        if outcome is RepoNotFoundError:  # word for word what a missing repo says: nothing leaks
            assert type(info.value) is RepoNotFoundError and info.value.message == f"Repository {repo} not found"
    # a dataset of the same name is another repo
    snap.check(("dataset", repo), None, None)


def test_changes_bump_the_epoch_and_load_whole(engine: Engine) -> None:
    repo = RepoRef.parse("model", "acme/x")
    with session_scope(engine) as session:
        t = tokens.create(session, name="n", role="reader", actor=ADMIN, key=KEY, expires_days=1)
    with Session(engine) as session:
        start = access.current_epoch(session)
    with session_scope(engine) as session:
        assert access.set_visibility(session, repo, "private", actor=ADMIN)
        assert access.add_grant(session, repo, f"token:{t.token_id}", actor=ADMIN)
        assert not access.add_grant(session, repo, f"token:{t.token_id}", actor=ADMIN)  # already there
        assert access.add_member(session, "ml", t.token_id, actor=ADMIN)
        assert access.add_grant(session, repo, "group:ml", actor=ADMIN)
    with Session(engine) as session:
        snap = access.load_snapshot(session)
        assert snap.epoch == start + 4
        actions = [e.action for e in audit.query(session, limit=4)]
    assert snap.visibility == {("model", "acme/x"): "private"}
    assert snap.grants[("model", "acme/x")] == {f"token:{t.token_id}", "group:ml"}
    assert snap.groups == {t.token_id: frozenset({"ml"})}
    assert actions == ["grant.add", "group.add", "grant.add", "repo.visibility"]
    with session_scope(engine) as session:
        with pytest.raises(Exception, match="No token nope"):
            access.add_grant(session, repo, "token:nope", actor=ADMIN)
        with pytest.raises(Exception, match="Invalid grant subject"):
            access.add_grant(session, repo, "alice", actor=ADMIN)


def test_gated_upstream_gates_a_repo_nobody_decided_about(engine: Engine) -> None:
    gated = [{"rule": "gated", "severity": "warn", "message": "gated upstream", "data": {}}]
    other = [{"rule": "license", "severity": "info", "message": "mit", "data": {}}]
    a, b, c, d = (RepoRef.parse("model", f"acme/{n}") for n in "abcd")
    with session_scope(engine) as session:
        assert access.gate_if_gated_upstream(session, a, gated)
        assert not access.gate_if_gated_upstream(session, b, other)
        access.set_visibility(session, c, "private", actor=ADMIN)
        assert not access.gate_if_gated_upstream(session, c, gated)  # private stays private
        access.set_visibility(session, d, "public", actor=ADMIN)
        assert not access.gate_if_gated_upstream(session, d, gated)  # an admin's explicit public stays
    with Session(engine) as session:
        assert [access.get_visibility(session, r) for r in (a, b, c, d)] == ["gated", "public", "private", "public"]


# -- rate limits


def test_a_token_bucket_allows_its_budget_then_says_how_long_to_wait() -> None:
    limiter = RateLimiter(60, 60)  # 60 a minute, a minute's worth at once
    assert all(limiter.take("ip", now=100.0) == 0.0 for _ in range(60))
    wait = limiter.take("ip", now=100.0)
    assert wait == pytest.approx(1.0)
    assert limiter.take("other", now=100.0) == 0.0  # buckets are per key
    assert limiter.take("ip", now=101.01) == 0.0  # one more after a second
    assert limiter.take("ip", now=101.02) > 0


def test_limits_raise_with_retry_after_and_zero_turns_a_limit_off() -> None:
    limits = Limits.from_settings(auth_failures_per_minute=3, requests_per_hour=2, hub_reads_per_minute_per_address=0,
                                  hub_reads_per_minute_per_token=5)
    for _ in range(3):
        limits.check_auth_failures("1.2.3.4")
        limits.auth_failed("1.2.3.4")
    with pytest.raises(RateLimitedError) as info:
        limits.check_auth_failures("1.2.3.4")
    assert info.value.retry_after >= 1
    limits.check_auth_failures("5.6.7.8")
    limits.request_created("t")
    limits.request_created("t")
    with pytest.raises(RateLimitedError) as info:
        limits.request_created("t")
    assert 1700 <= info.value.retry_after <= 1800  # one request per 30 minutes refills
    for _ in range(1000):
        limits.hub_read("1.2.3.4", None)  # no per-address limit
    for _ in range(5):
        limits.hub_read("1.2.3.4", "t")
    with pytest.raises(RateLimitedError):
        limits.hub_read("1.2.3.4", "t")


def test_a_full_bucket_table_forgets_refilled_buckets_first() -> None:
    limiter = RateLimiter(10, 60, max_keys=3)
    limiter.take("a", now=0.0)
    limiter.take("b", now=0.0)
    limiter.take("c", now=100.0)
    limiter.take("d", now=100.0)  # a and b have refilled: forgotten
    assert set(limiter._buckets) == {"c", "d"}


# -- tokens


def test_tokens_are_hmac_under_the_instance_key_and_expire(engine: Engine) -> None:
    with session_scope(engine) as session:
        t = tokens.create(session, name="ci", role="reader", actor=ADMIN, key=KEY, expires_days=90)
    secret = t.token.split("_", 2)[2]
    with Session(engine) as session:
        row = session.get(ApiToken, t.token_id)
        assert row is not None and row.hash_scheme == "hmac-sha256"
        assert row.secret_hash not in (hashlib.sha256(secret.encode()).hexdigest(), secret)
        assert timedelta(days=89, hours=23) < row.expires_at - utcnow() <= timedelta(days=90)  # type: ignore[operator]
        assert tokens.authenticate(session, t.token, key=KEY).token_id == t.token_id
        with pytest.raises(tokens.NotAuthenticatedError):
            tokens.authenticate(session, t.token, key=tokens.derive_key(b"another instance key"))
        with pytest.raises(tokens.TokenExpiredError, match="expired on"):
            tokens.authenticate(session, t.token, key=KEY, now=utcnow() + timedelta(days=91))
    with session_scope(engine) as session:
        never = tokens.create(session, name="svc", role="reader", actor=ADMIN, key=KEY, expires_days=None)
        assert never.expires_at is None
        assert tokens.authenticate(session, never.token, key=KEY, now=utcnow() + timedelta(days=10000))


def test_last_used_is_written_at_most_once_a_minute(engine: Engine) -> None:
    with session_scope(engine) as session:
        t = tokens.create(session, name="gpu", role="reader", actor=ADMIN, key=KEY, expires_days=1)
    now = utcnow()
    with session_scope(engine) as session:
        row = tokens.authenticate(session, t.token, key=KEY)
        assert tokens.touch(session, row, now=now)
        assert not tokens.touch(session, row, now=now + timedelta(seconds=59))
        assert tokens.touch(session, row, now=now + timedelta(seconds=61))
    with Session(engine) as session:
        assert session.get(ApiToken, t.token_id).last_used_at == now + timedelta(seconds=61)  # type: ignore[union-attr]


def test_a_pre_upgrade_sha256_token_still_works_and_is_rehashed_on_first_use(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    old = create_engine(url)
    secret = "s" * 43
    with old.begin() as conn:
        command.upgrade(_alembic_config(conn), "0002")
        conn.execute(text("INSERT INTO apitoken (token_id, name, role, secret_hash, created_at, created_by, revoked) "
                          "VALUES ('0123456789abcdef', 'old', 'admin', :h, '2026-01-01 00:00:00', 'cli', 0)"),
                     {"h": hashlib.sha256(secret.encode()).hexdigest()})
    old.dispose()
    engine = make_engine(DatabaseSettings(url=url))
    token = f"hg_0123456789abcdef_{secret}"
    try:
        with Session(engine) as session:
            row = session.get(ApiToken, "0123456789abcdef")
            assert row is not None and row.hash_scheme == "sha256" and row.expires_at is None
        with session_scope(engine) as session:
            assert tokens.authenticate(session, token, key=KEY).role == "admin"
        with Session(engine) as session:
            row = session.get(ApiToken, "0123456789abcdef")
            assert row is not None and row.hash_scheme == "hmac-sha256"
            assert row.secret_hash != hashlib.sha256(secret.encode()).hexdigest()
            assert tokens.authenticate(session, token, key=KEY).name == "old"  # and again, by its HMAC
            with pytest.raises(tokens.NotAuthenticatedError):
                tokens.authenticate(session, token[:-1] + "x", key=KEY)
    finally:
        engine.dispose()


def test_two_person_rule(engine: Engine) -> None:
    repo = RepoRef.parse("model", "acme/two")
    alice, bob = audit.Actor("alice", "admin"), audit.Actor("bob", "admin")
    with session_scope(engine) as session:
        pks = [workflow.submit(session, repo=repo, revision="main", commit="a" * 40, allow_patterns=None,
                               ignore_patterns=None, reason="", actor=alice, findings=[], verdict="review",
                               changes=None).pk for _ in range(2)]
    with session_scope(engine) as session:
        with pytest.raises(tokens.PermissionDeniedError, match="two-person rule"):
            workflow.approve(session, pks[0], alice, require_second_approver=True)
    with session_scope(engine) as session:
        assert workflow.approve(session, pks[0], bob, require_second_approver=True).state == "approved"
        assert workflow.approve(session, pks[1], alice).state == "approved"  # the rule is off by default
