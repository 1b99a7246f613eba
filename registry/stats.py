"""What the operators' metrics read from the database: counts by state, the queue, the last scrub."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from registry.models import AuditEvent, Job, MirrorRequest, Snapshot, utcnow


@dataclass
class CatalogStats:
    requests: dict[str, int] = field(default_factory=dict)  # mirror requests by state
    jobs: dict[str, int] = field(default_factory=dict)  # jobs by state
    snapshots: dict[str, int] = field(default_factory=dict)  # snapshots by state (available, unavailable, blocked)
    queue_depth: int = 0  # jobs waiting for a worker (queued, due now)
    oldest_queued_seconds: float = 0.0  # age of the oldest of them (0 when none waits)
    last_scrub_at: datetime | None = None
    last_scrub: dict[str, Any] = field(default_factory=dict)  # that scrub's audit detail (corrupt, missing)


def _by_state(session: Session, model: Any) -> dict[str, int]:
    rows = session.exec(select(model.state, func.count()).group_by(model.state)).all()
    return {str(state): int(n) for state, n in rows}


def catalog_stats(session: Session) -> CatalogStats:
    """Four small grouped queries (indexed columns), for a metrics scrape."""
    now = utcnow()
    stats = CatalogStats(requests=_by_state(session, MirrorRequest), jobs=_by_state(session, Job),
                         snapshots=_by_state(session, Snapshot))
    due = (col(Job.state) == "queued", col(Job.run_after) <= now)
    depth, oldest = session.exec(select(func.count(), func.min(Job.created_at)).where(*due)).one()
    stats.queue_depth = int(depth or 0)
    if oldest is not None:
        oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=now.tzinfo)
        stats.oldest_queued_seconds = max(0.0, (now - oldest).total_seconds())
    last = session.exec(
        select(AuditEvent).where(AuditEvent.action == "scrub").order_by(col(AuditEvent.pk).desc()).limit(1)
    ).first()
    if last is not None:
        stats.last_scrub_at, stats.last_scrub = last.at, dict(last.detail or {})
    return stats
