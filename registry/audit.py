"""Append-only audit log: who changed what, when, from where."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from registry.models import AuditEvent


@dataclass(frozen=True)
class Actor:
    """Who is acting: a token's name and role, and the client address when known."""

    name: str
    role: str
    source: str | None = None


SYSTEM = Actor("system", "admin")


def record(session: Session, actor: Actor, action: str, target: str, **detail: Any) -> None:
    """Add an event to the caller's transaction (it commits or rolls back with the change it describes)."""
    session.add(AuditEvent(actor=actor.name, action=action, target=target, source=actor.source, detail=detail))


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
