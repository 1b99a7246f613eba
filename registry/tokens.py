"""API tokens: shown once, stored as an HMAC under the instance key; expiring; roles reader < requester < admin.

A token is ``hg_<id>_<secret>`` (a 256-bit secret). The row keeps ``HMAC-SHA256(subkey, secret)``,
where the subkey is derived from the instance secret key (``HUBGATE_SECRET_KEY_FILE``, outside the
database): a copied database cannot check guesses. Rows from before the 0003 upgrade hold a bare
sha256 (``hash_scheme = 'sha256'``); they still verify, and are re-hashed on their first successful use.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, select

from registry import access, audit
from registry.errors import HubgateError, InvalidInputError, NotFoundError
from registry.models import ApiToken, utcnow

ROLES = ("reader", "requester", "admin")
PREFIX = "hg_"
HMAC_SCHEME, LEGACY_SCHEME = "hmac-sha256", "sha256"
LAST_USED_RESOLUTION = timedelta(seconds=60)  # last_used_at is written at most once a minute per token


class NotAuthenticatedError(HubgateError):
    """No token, or a token hubgate does not know."""


class PermissionDeniedError(HubgateError):
    """The token's role does not allow the action."""


class TokenExpiredError(NotAuthenticatedError):
    """The token is known but past its expiry."""


@dataclass(frozen=True)
class CreatedToken:
    token_id: str
    name: str
    role: str
    token: str  # the only time the secret is visible
    expires_at: datetime | None = None  # None: never


def derive_key(instance_key: bytes) -> bytes:
    """The token-hashing subkey: the instance key itself never meets a token."""
    return hmac.new(instance_key, b"hubgate/api-token-hmac/v1", hashlib.sha256).digest()


def _hmac(key: bytes, secret: str) -> str:
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def _legacy_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(session: Session, *, name: str, role: str, actor: audit.Actor, key: bytes,
           expires_days: int | None) -> CreatedToken:
    """A new token, valid ``expires_days`` days (None: never). ``key`` is ``derive_key(instance key)``."""
    if role not in ROLES:
        raise InvalidInputError(f"Invalid role {role!r}: expected one of {', '.join(ROLES)}")
    if not name or len(name) > 200:
        raise InvalidInputError("A token needs a name of 1 to 200 characters")
    if expires_days is not None and not 1 <= expires_days <= 3650:
        raise InvalidInputError("A token's expiry must be 1 to 3650 days (or none, explicitly)")
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    expires_at = utcnow() + timedelta(days=expires_days) if expires_days is not None else None
    session.add(ApiToken(token_id=token_id, name=name, role=role, secret_hash=_hmac(key, secret),
                         hash_scheme=HMAC_SCHEME, created_by=actor.name, expires_at=expires_at))
    audit.record(session, actor, "token.create", f"token:{token_id}", name=name, role=role,
                 expires_at=expires_at.isoformat() if expires_at else None)
    return CreatedToken(token_id, name, role, f"{PREFIX}{token_id}_{secret}", expires_at)


def token_id_of(token: str) -> str | None:
    """The id part of a well-formed hubgate token, else None."""
    if not token.startswith(PREFIX) or token.count("_") < 2:
        return None
    return token[len(PREFIX):].partition("_")[0] or None


def authenticate(session: Session, token: str, *, key: bytes, now: datetime | None = None) -> ApiToken:
    """The live token row for ``token``; a legacy sha256 row is re-hashed with ``key`` (the caller commits).

    Raises TokenExpiredError for an expired token, NotAuthenticatedError for anything else.
    """
    token_id = token_id_of(token)
    if token_id is None:
        raise NotAuthenticatedError("Invalid token")
    secret = token[len(PREFIX) + len(token_id) + 1:]
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked:
        raise NotAuthenticatedError("Invalid token")
    legacy = row.hash_scheme == LEGACY_SCHEME
    expected = _legacy_hash(secret) if legacy else _hmac(key, secret)
    if not hmac.compare_digest(row.secret_hash, expected):
        raise NotAuthenticatedError("Invalid token")
    if row.expires_at is not None and row.expires_at <= (now or utcnow()):
        raise TokenExpiredError(f"Token {token_id} ({row.name}) expired on {row.expires_at:%Y-%m-%d %H:%M} UTC: "
                                "ask an admin for a new one")
    if legacy:
        row.secret_hash, row.hash_scheme = _hmac(key, secret), HMAC_SCHEME
        session.add(row)
    return row


def revoke(session: Session, token_id: str, *, actor: audit.Actor) -> None:
    """Revoke a token; every process sharing the database refuses it within a second (the access epoch)."""
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(f"No token {token_id}")
    row.revoked, row.revoked_at = True, row.revoked_at or utcnow()
    session.add(row)
    audit.record(session, actor, "token.revoke", f"token:{token_id}", name=row.name)
    access.bump_epoch(session)


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.exec(select(ApiToken).order_by(ApiToken.created_at)).all())  # type: ignore[arg-type]


def authorize(role: str, needed: str) -> None:
    """Raise PermissionDeniedError unless ``role`` is at least ``needed``."""
    if ROLES.index(role) < ROLES.index(needed):
        raise PermissionDeniedError(f"This action needs the {needed} role; the token has {role}")


def touch(session: Session, row: ApiToken, *, now: datetime | None = None) -> bool:
    """Record a use, unless one was recorded less than a minute ago (no write per request). True if written."""
    now = now or utcnow()
    if row.last_used_at is not None and now - row.last_used_at < LAST_USED_RESOLUTION:
        return False
    row.last_used_at = now
    session.add(row)
    return True
