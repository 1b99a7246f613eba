"""API tokens: shown once, stored hashed; roles reader < requester < admin."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlmodel import Session, select

from registry import audit
from registry.errors import HubgateError, InvalidInputError, NotFoundError
from registry.models import ApiToken, utcnow

ROLES = ("reader", "requester", "admin")
PREFIX = "hg_"


class NotAuthenticatedError(HubgateError):
    """No token, or a token hubgate does not know."""


class PermissionDeniedError(HubgateError):
    """The token's role does not allow the action."""


@dataclass(frozen=True)
class CreatedToken:
    token_id: str
    name: str
    role: str
    token: str  # the only time the secret is visible


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(session: Session, *, name: str, role: str, actor: audit.Actor) -> CreatedToken:
    if role not in ROLES:
        raise InvalidInputError(f"Invalid role {role!r}: expected one of {', '.join(ROLES)}")
    if not name or len(name) > 200:
        raise InvalidInputError("A token needs a name of 1 to 200 characters")
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    session.add(ApiToken(token_id=token_id, name=name, role=role, secret_hash=_hash(secret), created_by=actor.name))
    audit.record(session, actor, "token.create", f"token:{token_id}", name=name, role=role)
    return CreatedToken(token_id, name, role, f"{PREFIX}{token_id}_{secret}")


def authenticate(session: Session, token: str) -> ApiToken:
    """The live token row for ``token``. Raises NotAuthenticatedError."""
    if not token.startswith(PREFIX) or token.count("_") < 2:
        raise NotAuthenticatedError("Invalid token")
    token_id, _, secret = token[len(PREFIX):].partition("_")
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked or not hmac.compare_digest(row.secret_hash, _hash(secret)):
        raise NotAuthenticatedError("Invalid token")
    return row


def revoke(session: Session, token_id: str, *, actor: audit.Actor) -> None:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(f"No token {token_id}")
    row.revoked = True
    session.add(row)
    audit.record(session, actor, "token.revoke", f"token:{token_id}")


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.exec(select(ApiToken).order_by(ApiToken.created_at)).all())  # type: ignore[arg-type]


def authorize(role: str, needed: str) -> None:
    """Raise PermissionDeniedError unless ``role`` is at least ``needed``."""
    if ROLES.index(role) < ROLES.index(needed):
        raise PermissionDeniedError(f"This action needs the {needed} role; the token has {role}")


def touch(session: Session, row: ApiToken) -> None:
    row.last_used_at = utcnow()
    session.add(row)
