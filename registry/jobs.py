"""A durable job queue in the database, claimed safely by any number of workers.

PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED``; SQLite: one atomic ``UPDATE … RETURNING``.
A claim is a lease: a worker that dies stops renewing it and the job returns to the queue.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, update
from sqlmodel import Session, col, select

from registry.models import Job, utcnow


def enqueue(session: Session, kind: str, payload: dict[str, Any]) -> Job:
    job = Job(kind=kind, payload=payload)
    session.add(job)
    session.flush()
    return job


def _claimable(now):  # type: ignore[no-untyped-def]
    return and_(
        or_(
            and_(col(Job.state) == "queued", col(Job.run_after) <= now),
            and_(col(Job.state) == "running", col(Job.lease_expires_at) < now),
        ),
        col(Job.attempts) < col(Job.max_attempts),
    )


def claim(session: Session, worker_id: str, *, lease_seconds: float) -> Job | None:
    """Take the oldest claimable job (queued, or running with an expired lease) or None. Commits."""
    now = utcnow()
    values = {
        "state": "running", "lease_owner": worker_id,
        "lease_expires_at": now + timedelta(seconds=lease_seconds), "attempts": col(Job.attempts) + 1,
    }
    oldest = select(col(Job.pk)).where(_claimable(now)).order_by(col(Job.pk)).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        pk = session.execute(oldest.with_for_update(skip_locked=True)).scalar()
        if pk is not None:
            session.execute(update(Job).where(col(Job.pk) == pk).values(**values))
    else:  # SQLite: one statement, atomic under its database lock
        pk = session.execute(
            update(Job).where(col(Job.pk) == oldest.scalar_subquery()).values(**values).returning(col(Job.pk))
        ).scalar()
    if pk is None:
        session.rollback()
        return None
    session.commit()
    return session.get(Job, pk)


def heartbeat(session: Session, job_pk: int, worker_id: str, *, lease_seconds: float) -> bool:
    """Extend the lease; False if the job is no longer this worker's."""
    result = session.execute(
        update(Job)
        .where(col(Job.pk) == job_pk, col(Job.lease_owner) == worker_id, col(Job.state) == "running")
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
    )
    session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def reap_exhausted(session: Session) -> list[Job]:
    """Fail the jobs whose lease expired on their last allowed attempt (their workers kept dying).

    Without this a job that lost every worker would sit ``running`` forever and hold its request.
    Does not commit: the caller fails the jobs' requests in the same transaction.
    """
    now = utcnow()
    candidates = session.exec(
        select(Job).where(
            col(Job.state) == "running", col(Job.lease_expires_at) < now, col(Job.attempts) >= col(Job.max_attempts)
        )
    ).all()
    reaped = []
    for job in candidates:
        result = session.execute(  # atomic: only one reaper wins each job
            update(Job)
            .where(col(Job.pk) == job.pk, col(Job.state) == "running", col(Job.lease_expires_at) < now)
            .values(state="failed", lease_owner=None, lease_expires_at=None,
                    last_error=f"the job lost its worker {job.attempts} times (crashed or killed)")
        )
        if result.rowcount:  # type: ignore[attr-defined]
            reaped.append(job)
    return reaped


def complete(session: Session, job_pk: int, worker_id: str) -> bool:
    """Mark the job done if ``worker_id`` still holds its lease; False when another worker took it over."""
    return _finish(session, job_pk, worker_id, state="done")


def fail(session: Session, job_pk: int, worker_id: str, error: str) -> bool:
    """Record the job's error if ``worker_id`` still holds its lease; False when another worker took it over."""
    return _finish(session, job_pk, worker_id, state="failed", last_error=error[:2000])


def _finish(session: Session, job_pk: int, worker_id: str, **values: object) -> bool:
    result = session.execute(
        update(Job)
        .where(col(Job.pk) == job_pk, col(Job.lease_owner) == worker_id, col(Job.state) == "running")
        .values(lease_owner=None, lease_expires_at=None, **values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
