"""Who is calling: ``Authorization: Bearer <token>`` as the HF clients send it; roles reader < requester < admin."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.services import Services, bearer, services
from registry import tokens
from registry.audit import Actor


def _source(request: Request) -> str | None:
    return request.client.host if request.client else None


async def hub_reader(request: Request, svc: Services | None = None) -> Actor | None:
    """For Hub routes: anonymous when allowed (an unknown token then counts as none), else a valid token."""
    svc = svc or services(request)
    token = bearer(request)
    actor = await svc.actor(token) if token else None
    if actor is None and not svc.settings.anonymous_read:
        raise tokens.NotAuthenticatedError(
            "Authentication required: set HF_TOKEN to a hubgate token" if token is None else "Invalid token"
        )
    return actor


def require(role: str):  # type: ignore[no-untyped-def]
    """FastAPI dependency: the caller's Actor, with at least ``role``."""

    async def dependency(request: Request) -> Actor:
        token = bearer(request)
        if token is None:
            raise tokens.NotAuthenticatedError("This API needs 'Authorization: Bearer <token>'")
        svc = services(request)
        actor = await svc.actor(token)
        if actor is None:
            raise tokens.NotAuthenticatedError("Invalid token")
        tokens.authorize(actor.role, role)
        return Actor(actor.name, actor.role, _source(request))

    return dependency


Reader = Annotated[Actor, Depends(require("reader"))]
Requester = Annotated[Actor, Depends(require("requester"))]
Admin = Annotated[Actor, Depends(require("admin"))]
