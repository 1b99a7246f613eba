"""Append-only, hash-chained audit log: who changed what, when, from where, with which token and HTTP request.

Every entry carries its position ``seq`` in one chain, the previous entry's hash and its own:
``hash = sha256(canonical JSON of its fields + prev_hash)``. Editing an entry breaks its own hash;
removing one breaks the chain at the next ``seq``; ``verify`` names the first bad entry. Appending
first updates the one-row ``AuditChainHead`` (a row lock on PostgreSQL, the write lock on SQLite),
so concurrent appenders in several processes queue there and never fork the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from registry.models import AuditChainHead, AuditEvent, utcnow


@dataclass(frozen=True)
class Actor:
    """Who is acting: a token's name and role, and the client address when known."""

    name: str
    role: str
    source: str | None = None
    token_id: str | None = None
    request_id: str | None = None  # the HTTP X-Request-Id the api layer was serving


SYSTEM = Actor("system", "admin")


def record(session: Session, actor: Actor, action: str, target: str, **detail: Any) -> None:
    """Append an event to the chain in the caller's transaction (it commits or rolls back with the change
    it describes). Holds the chain head until that transaction ends: keep audited transactions short."""
    # The head first: on PostgreSQL this UPDATE takes the row lock, on SQLite the database write lock, so a
    # concurrent appender waits here and then reads the head this one committed.
    session.execute(update(AuditChainHead).where(col(AuditChainHead.pk) == 1).values(seq=AuditChainHead.seq + 1))
    head = session.get(AuditChainHead, 1, populate_existing=True)
    if head is None:
        raise RuntimeError("The audit chain head is missing: the database was not upgraded (hubgate db upgrade)")
    event = AuditEvent(
        at=utcnow(), actor=actor.name, action=action, target=target, source=actor.source,
        detail=json.loads(_canonical(detail)), token_id=actor.token_id, request_id=actor.request_id,
        seq=head.seq, prev_hash=head.last_hash,
    )
    event.hash = entry_hash(event)
    head.last_hash = event.hash
    session.add(event)
    session.add(head)


def query(
    session: Session, *, action: str | None = None, target: str | None = None, since: datetime | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    q = select(AuditEvent)
    if action:
        q = q.where(AuditEvent.action == action)
    if target:
        q = q.where(AuditEvent.target == target)
    if since:
        q = q.where(AuditEvent.at >= since)
    return list(session.exec(q.order_by(col(AuditEvent.pk).desc()).limit(min(max(limit, 1), 1000))).all())


GENESIS = "0" * 64  # the prev_hash of the first entry
CHAIN_START = "audit.chain-start"  # the entry the 0003 upgrade appended after chaining the older ones


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _at(value: datetime) -> str:
    value = value.replace(tzinfo=timezone.utc) if value.utcoffset() is None else value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_fields(e: AuditEvent) -> dict[str, Any]:
    """What an entry's hash covers (everything but its database key and its own hash)."""
    return {
        "v": 1, "seq": e.seq, "at": _at(e.at), "actor": e.actor, "action": e.action, "target": e.target,
        "source": e.source, "token_id": e.token_id, "request_id": e.request_id, "detail": e.detail,
    }


def entry_hash(e: AuditEvent) -> str:
    """sha256 of the canonical JSON of the entry's fields, followed by its prev_hash (hex)."""
    return hashlib.sha256((_canonical(entry_fields(e)) + (e.prev_hash or "")).encode()).hexdigest()


def entry_doc(e: AuditEvent) -> dict[str, Any]:
    """One entry as exported (JSON lines for a SIEM): its fields, id, prev_hash and hash."""
    return {"id": e.pk, **entry_fields(e), "prev_hash": e.prev_hash, "hash": e.hash}


@dataclass
class ChainReport:
    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    chained_at_upgrade: int = 0  # entries older than the chain, chained (as they were) by the 0003 upgrade
    problem: str | None = None  # the first bad entry, in words
    bad_seq: int | None = None
    bad_id: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(session: Session, *, batch: int = 1000) -> ChainReport:
    """Walk the chain in ``seq`` order and check every entry's hash, its link to the one before, that no
    position is missing, and the head. Returns a report naming the first bad entry (``ok`` False)."""
    report = ChainReport()
    head = session.get(AuditChainHead, 1)
    unchained = session.exec(select(AuditEvent.pk).where(col(AuditEvent.seq).is_(None)).limit(1)).first()
    if unchained is not None:
        report.problem, report.bad_id = f"entry id {unchained} has no place in the chain (inserted behind hubgate's back)", unchained
        return report
    prev, prev_id, expected = GENESIS, None, 1
    rows = session.exec(select(AuditEvent).order_by(col(AuditEvent.seq)).execution_options(yield_per=batch))
    for e in rows:
        assert e.seq is not None
        where = f"entry seq {e.seq} (id {e.pk}, {e.action} {e.target})"
        if e.seq != expected:
            report.problem = (f"entry seq {expected} is missing (removed): the chain jumps from seq {expected - 1} "
                              f"to {where}")
            report.bad_seq = expected
            return report
        if e.hash != entry_hash(e):
            report.problem, report.bad_seq, report.bad_id = f"{where} was altered: its content does not match its hash", e.seq, e.pk
            return report
        if e.prev_hash != prev:
            report.problem = (f"entry seq {e.seq - 1} (id {prev_id}) was altered or replaced: {where} links to "
                              "another hash")
            report.bad_seq, report.bad_id = e.seq - 1, prev_id
            return report
        if e.action == CHAIN_START:
            report.chained_at_upgrade = int((e.detail or {}).get("chained_existing", 0))
        prev, prev_id, expected = e.hash, e.pk, expected + 1
        report.entries += 1
    report.head_seq, report.head_hash = expected - 1, prev
    if head is None or head.seq != expected - 1 or head.last_hash != prev:
        report.problem = (f"the chain head says seq {head.seq if head else '?'} but the last entry is seq {expected - 1}: "
                          "entries at the end were removed")
        report.bad_seq = expected
    return report


def export(session: Session, *, since_seq: int | None = None, since_at: datetime | None = None,
           batch: int = 1000) -> Iterator[dict[str, Any]]:
    """Entries in chain order (after ``since_seq``, or at/after ``since_at``), as ``entry_doc`` dicts."""
    q = select(AuditEvent).where(col(AuditEvent.seq).is_not(None))
    if since_seq is not None:
        q = q.where(col(AuditEvent.seq) > since_seq)
    if since_at is not None:
        q = q.where(col(AuditEvent.at) >= since_at)
    for e in session.exec(q.order_by(col(AuditEvent.seq)).execution_options(yield_per=batch)):
        yield entry_doc(e)
