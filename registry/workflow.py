"""Mirror requests and their state machine; every transition writes an audit event.

    pending --approve--> approved --start--> syncing --finish--> available
       |                    ^                   |
       +--reject--> rejected|                   +--fail--> failed --retry--> approved
       +--arrive (offline request, its revision came by bundle)--> available
                            |                   +--block--> blocked --retry--> approved
                            +-------------------------------------(reject)-> rejected

``blocked``: the content scan refused a file (the reasons are in ``scan``). An admin records an
override or a code approval, then retries; or rejects the request.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from registry import audit, jobs, tokens
from registry.errors import InvalidTransitionError, JustificationRequiredError, NotFoundError, PolicyBlockedError
from registry.models import MirrorRequest, utcnow
from registry.types import RepoRef

SYNC_JOB = "sync"

# action -> (states it may start from, state it leads to)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "approve": (frozenset({"pending"}), "approved"),
    "reject": (frozenset({"pending", "failed", "blocked"}), "rejected"),
    "start": (frozenset({"approved"}), "syncing"),  # start() keeps a request already syncing (a lost lease taken over)
    "finish": (frozenset({"syncing"}), "available"),
    "fail": (frozenset({"approved", "syncing"}), "failed"),
    "block": (frozenset({"approved", "syncing"}), "blocked"),
    "retry": (frozenset({"failed", "blocked"}), "approved"),
    # an offline request (sealed side, no commit) whose revision arrived by bundle: nothing left to decide
    "arrive": (frozenset({"pending"}), "available"),
}

# Licences an admin may approve only with a written reason: nobody can tell from them what is allowed.
UNCLEAR_LICENSES = frozenset({"other", "unknown", "custom"})


def _ensure_allowed(req: MirrorRequest, action: str) -> str:
    """The state ``action`` leads to; raises InvalidTransitionError when ``req``'s state does not allow it."""
    allowed, target = TRANSITIONS[action]
    if req.state not in allowed:
        raise InvalidTransitionError(f"Request {req.pk} is {req.state}; cannot {action} it")
    return target


def _transition(session: Session, req: MirrorRequest, action: str, actor: audit.Actor, **detail: Any) -> None:
    """Move ``req`` along ``action`` with one conditional UPDATE (``… WHERE state IN (allowed)``).

    Of two admins approving or retrying the same request at once (two replicas, two processes), one
    UPDATE changes the row and the other finds it already moved: InvalidTransitionError, so only one
    sync job is ever queued. On PostgreSQL the second UPDATE waits for the first transaction and then
    re-checks the state; on SQLite writers are serialised by the database lock.
    """
    allowed, target = TRANSITIONS[action]
    _ensure_allowed(req, action)
    before, now = req.state, utcnow()
    result = session.execute(
        update(MirrorRequest)
        .where(col(MirrorRequest.pk) == req.pk, col(MirrorRequest.state).in_(allowed))
        .values(state=target, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(req)
        raise InvalidTransitionError(f"Request {req.pk} is {req.state} now; cannot {action} it")
    set_committed_value(req, "state", target)  # what the UPDATE wrote: nothing left for the ORM to flush
    set_committed_value(req, "updated_at", now)
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


def needs_reason(req: MirrorRequest) -> str | None:
    """Why approving ``req`` needs a written reason (a missing or unclear licence), else None."""
    for f in req.findings:
        if f.get("rule") == "license.missing":
            return "the repo declares no licence"
        lic = (f.get("data") or {}).get("license")
        if f.get("rule", "").startswith("license") and isinstance(lic, str) and lic.lower() in UNCLEAR_LICENSES:
            return f"its licence is {lic!r}"
    return None


def approve(session: Session, pk: int, actor: audit.Actor, *, reason: str | None = None,
            require_second_approver: bool = False) -> MirrorRequest:
    """Approve the recorded commit and queue its sync. Raises PolicyBlockedError if a rule blocks it,
    JustificationRequiredError if the licence is missing or ``other`` and no ``reason`` is given.
    With ``require_second_approver`` (the two-person rule) the requester cannot approve: PermissionDeniedError."""
    req = get(session, pk)
    if require_second_approver and req.requester == actor.name:
        raise tokens.PermissionDeniedError(f"Request {pk} was made by {actor.name}: under the two-person rule "
                                           "(HUBGATE_REQUIRE_SECOND_APPROVER) another admin must approve it")
    if not req.commit:
        raise InvalidTransitionError(
            f"Request {pk} was recorded offline and names no commit: export it to the connected side to approve it there"
        )
    if req.verdict == "blocked":
        blocking = [f for f in req.findings if f.get("severity") == "block"]
        raise PolicyBlockedError(f"Request {pk} is blocked by policy: " + "; ".join(f["message"] for f in blocking), blocking)
    _ensure_allowed(req, "approve")  # an illegal transition is a 409 whatever else is missing
    why = needs_reason(req)
    reason = (reason or "").strip() or None
    if why is not None and reason is None:
        raise JustificationRequiredError(f"Request {pk} can be approved only with a written reason: {why}")
    _transition(session, req, "approve", actor, **({"reason": reason} if reason else {}))
    req.decided_by, req.decided_at = actor.name, utcnow()
    if reason:
        req.decision_reason = reason
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
    # The new attempt starts its own count (the failed attempt's totals would read as progress made).
    req.files_done = req.files_total = req.bytes_done = req.bytes_total = 0
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


def arrive(session: Session, pk: int, commit: str, actor: audit.Actor) -> MirrorRequest:
    """An offline request whose revision arrived (by bundle, resolved to ``commit``) becomes available, so
    that ``requests export`` stops carrying it. Raises InvalidTransitionError unless it is pending offline."""
    req = get(session, pk)
    if req.commit:
        raise InvalidTransitionError(f"Request {pk} names commit {req.commit}: it is decided here, not by a bundle")
    _transition(session, req, "arrive", actor, commit=commit)
    req.commit = commit
    session.add(req)
    return req


def fail(session: Session, pk: int, error: str) -> MirrorRequest:
    req = get(session, pk)
    _transition(session, req, "fail", audit.SYSTEM, error=error[:500])
    req.error = error[:2000]
    return req


def block(session: Session, pk: int, scan: dict[str, Any]) -> MirrorRequest:
    """The content scan refused the snapshot: nothing was published; ``scan`` names every reason."""
    req = get(session, pk)
    reasons = scan.get("blocking") or []
    summary = "; ".join(f"{r.get('path') or '(tree)'}: {r.get('message')}" for r in reasons[:5])
    _transition(session, req, "block", audit.SYSTEM, reasons=reasons[:50])
    req.scan = scan
    req.error = f"Blocked by the content scan ({len(reasons)} finding(s)): {summary}"[:2000]
    return req


def record_scan(session: Session, pk: int, scan: dict[str, Any]) -> None:
    """Keep the scan of a snapshot that passed on its request (the request view shows it)."""
    req = get(session, pk)
    req.scan = scan
    session.add(req)


def set_progress(session: Session, pk: int, *, files_done: int, files_total: int, bytes_done: int, bytes_total: int) -> None:
    req = get(session, pk)
    req.files_done, req.files_total, req.bytes_done, req.bytes_total = files_done, files_total, bytes_done, bytes_total
    req.updated_at = utcnow()
    session.add(req)


def list_requests(
    session: Session, *, state: str | None = None, repo_id: str | None = None, limit: int = 100,
    requester: str | None = None,
) -> list[MirrorRequest]:
    q = select(MirrorRequest)
    if requester is not None:
        q = q.where(MirrorRequest.requester == requester)
    if state:
        q = q.where(MirrorRequest.state == state)
    if repo_id:
        q = q.where(MirrorRequest.repo_id == repo_id)
    return list(session.exec(q.order_by(col(MirrorRequest.pk).desc()).limit(min(max(limit, 1), 1000))).all())
