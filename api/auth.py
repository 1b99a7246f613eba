"""Who is calling: ``Authorization: Bearer <token>`` as the HF clients send it; roles reader < requester < admin."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from api.request_context import current_request_id
from api.services import Services, bearer, services
from registry import audit, tokens
from registry.access import key_of
from registry.audit import Actor
from registry.db import session_scope
from registry.errors import HubgateError
from registry.types import RepoRef

log = logging.getLogger(__name__)


def _source(request: Request) -> str | None:
    return request.client.host if request.client else None


async def hub_reader(request: Request, svc: Services | None = None) -> Actor | None:
    """For Hub routes: anonymous when allowed (an unknown token then counts as none), else a valid token.
    Spends one Hub read of the client's and the token's budgets (RateLimitedError past them)."""
    svc = svc or services(request)
    token = bearer(request)
    source = request.scope["client"][0] if request.scope.get("client") else None
    actor = await svc.actor(token, source) if token else None
    if actor is None and not svc.settings.anonymous_read:
        raise tokens.NotAuthenticatedError(
            "Authentication required: set HF_TOKEN to a hubgate token" if token is None else "Invalid token"
        )
    svc.limits.hub_read(source, actor.token_id if actor is not None else None)
    if actor is not None:
        request.scope["hubgate.actor"] = actor  # the access log names it (api/observability.py)
    return actor


async def check_repo(svc: Services, actor: Actor | None, repo: RepoRef) -> None:
    """May ``actor`` (None: anonymous) read ``repo``? Returns, or raises the Hub's answer: RepoNotFoundError
    for a private repo, GatedRepoAuthRequiredError / GatedRepoError for a gated one. No DB query."""
    snapshot = await svc.access_snapshot()
    if actor is None:
        snapshot.check(key_of(repo), None, None)
    else:
        snapshot.check(key_of(repo), actor.token_id, actor.role)


def require(role: str):  # type: ignore[no-untyped-def]
    """FastAPI dependency: the caller's Actor, with at least ``role``."""

    async def dependency(request: Request) -> Actor:
        token = bearer(request)
        if token is None:
            raise tokens.NotAuthenticatedError("This API needs 'Authorization: Bearer <token>'")
        svc = services(request)
        actor = await svc.actor(token, _source(request))
        if actor is None:
            raise tokens.NotAuthenticatedError("Invalid token")
        actor = Actor(actor.name, actor.role, _source(request), token_id=actor.token_id,
                      request_id=current_request_id())
        request.state.hubgate_actor = actor  # for the audit entry of a denied call
        tokens.authorize(actor.role, role)
        return actor

    return dependency


async def record_denied(request: Request, exc: HubgateError, status: int) -> None:
    """Audit a refused admin call (401/403). Bounded: past ``Limits.denied_records`` a minute, calls are only
    counted, and the count goes into the next entry written. Never fails the answer."""
    svc = services(request)
    if svc.limits.denied_records.take("all"):
        svc.denied_unrecorded += 1
        return
    actor: Actor | None = getattr(request.state, "hubgate_actor", None)
    if actor is None:
        presented = bearer(request)
        actor = Actor("anonymous" if presented is None else "unauthenticated", "none", _source(request),
                      token_id=tokens.token_id_of(presented) if presented else None, request_id=current_request_id())
    unrecorded, svc.denied_unrecorded = svc.denied_unrecorded, 0
    detail = {"method": request.method, "path": request.url.path[:300], "status": status,
              "reason": exc.message[:300], "unrecorded_before": unrecorded}

    def write() -> None:
        with session_scope(svc.engine) as session:
            audit.record(session, actor, "admin.denied", request.url.path[:300], **detail)

    try:
        await run_in_threadpool(write)
    except Exception:  # the refusal stands; losing its audit entry is logged
        log.exception("could not record a denied admin call to %s", request.url.path)


Reader = Annotated[Actor, Depends(require("reader"))]
Requester = Annotated[Actor, Depends(require("requester"))]
Admin = Annotated[Actor, Depends(require("admin"))]
