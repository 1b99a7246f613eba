"""Mirror requests and their state machine; every transition writes an audit event.

    pending --approve--> approved --start--> syncing --finish--> available
       |                    ^                   |
       +--reject--> rejected|                   +--fail--> failed --retry--> approved
                            +-------------------------------------(reject)-> rejected
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from registry import audit, jobs
from registry.errors import InvalidTransitionError, NotFoundError, PolicyBlockedError
from registry.models import MirrorRequest, utcnow
from registry.types import RepoRef

SYNC_JOB = "sync"

# action -> (states it may start from, state it leads to)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "approve": (frozenset({"pending"}), "approved"),
    "reject": (frozenset({"pending", "failed"}), "rejected"),
    "start": (frozenset({"approved"}), "syncing"),  # start() keeps a request already syncing (a lost lease taken over)
    "finish": (frozenset({"syncing"}), "available"),
    "fail": (frozenset({"approved", "syncing"}), "failed"),
    "retry": (frozenset({"failed"}), "approved"),
}


def _transition(session: Session, req: MirrorRequest, action: str, actor: audit.Actor, **detail: Any) -> None:
    allowed, target = TRANSITIONS[action]
    if req.state not in allowed:
        raise InvalidTransitionError(f"Request {req.pk} is {req.state}; cannot {action} it")
    before = req.state
    req.state, req.updated_at = target, utcnow()
    session.add(req)
    audit.record(session, actor, f"request.{action}", f"request:{req.pk}", before=before, after=target, **detail)


def get(session: Session, pk: int) -> MirrorRequest:
    req = session.get(MirrorRequest, pk)
    if req is None:
        raise NotFoundError(f"No mirror request {pk}")
    return req


def submit(
    session: Session,
    *,
    repo: RepoRef,
    revision: str,
    commit: str,
    allow_patterns: list[str] | None,
    ignore_patterns: list[str] | None,
    reason: str,
    actor: audit.Actor,
    findings: list[dict[str, Any]],
    verdict: str,
    changes: dict[str, Any] | None,
) -> MirrorRequest:
    """Record a request for ``repo`` at ``commit``; an ``auto-approve`` verdict approves it at once."""
    req = MirrorRequest(
        repo_type=repo.type.value, repo_id=repo.id, revision=revision, commit=commit,
        allow_patterns=allow_patterns, ignore_patterns=ignore_patterns, reason=reason, requester=actor.name,
        findings=findings, verdict=verdict, changes=changes,
    )
    session.add(req)
    session.flush()
    audit.record(session, actor, "request.create", f"request:{req.pk}", repo=repo.id, revision=revision,
                 commit=commit, verdict=verdict)
    if verdict == "auto-approve":
        approve(session, req.pk or 0, audit.Actor("policy", "admin", actor.source))
    return req


def approve(session: Session, pk: int, actor: audit.Actor) -> MirrorRequest:
    """Approve the recorded commit and queue its sync. Raises PolicyBlockedError if a rule blocks it."""
    req = get(session, pk)
    if not req.commit:
        raise InvalidTransitionError(
            f"Request {pk} was recorded offline and names no commit: export it to the connected side to approve it there"
        )
    if req.verdict == "blocked":
        blocking = [f for f in req.findings if f.get("severity") == "block"]
        raise PolicyBlockedError(f"Request {pk} is blocked by policy: " + "; ".join(f["message"] for f in blocking), blocking)
    _transition(session, req, "approve", actor)
    req.decided_by, req.decided_at = actor.name, utcnow()
    jobs.enqueue(session, SYNC_JOB, {"request": req.pk})
    return req


def reject(session: Session, pk: int, actor: audit.Actor, reason: str) -> MirrorRequest:
    req = get(session, pk)
    _transition(session, req, "reject", actor, reason=reason)
    req.decided_by, req.decided_at, req.decision_reason = actor.name, utcnow(), reason
    return req


def retry(session: Session, pk: int, actor: audit.Actor) -> MirrorRequest:
    req = get(session, pk)
    _transition(session, req, "retry", actor)
    req.error = None
    jobs.enqueue(session, SYNC_JOB, {"request": req.pk})
    return req


def start(session: Session, pk: int) -> MirrorRequest:
    req = get(session, pk)
    if req.state != "syncing":
        _transition(session, req, "start", audit.SYSTEM)
    return req


def finish(session: Session, pk: int) -> MirrorRequest:
    req = get(session, pk)
    _transition(session, req, "finish", audit.SYSTEM, commit=req.commit)
    return req


def fail(session: Session, pk: int, error: str) -> MirrorRequest:
    req = get(session, pk)
    _transition(session, req, "fail", audit.SYSTEM, error=error[:500])
    req.error = error[:2000]
    return req


def set_progress(session: Session, pk: int, *, files_done: int, files_total: int, bytes_done: int, bytes_total: int) -> None:
    req = get(session, pk)
    req.files_done, req.files_total, req.bytes_done, req.bytes_total = files_done, files_total, bytes_done, bytes_total
    req.updated_at = utcnow()
    session.add(req)


def list_requests(
    session: Session, *, state: str | None = None, repo_id: str | None = None, limit: int = 100
) -> list[MirrorRequest]:
    q = select(MirrorRequest)
    if state:
        q = q.where(MirrorRequest.state == state)
    if repo_id:
        q = q.where(MirrorRequest.repo_id == repo_id)
    return list(session.exec(q.order_by(col(MirrorRequest.pk).desc()).limit(min(max(limit, 1), 1000))).all())
