"""Secrets kept in the database (the upstream token), encrypted with the instance key (Fernet, cryptography).

The key lives outside the database (a 0600 file or a mounted secret), so a copied database
reveals nothing. Values are never logged or returned by any API.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from sqlmodel import Session

from registry import audit
from registry.errors import HubgateError
from registry.models import SecretValue, utcnow

UPSTREAM_TOKEN = "upstream_token"


class SecretKeyError(HubgateError):
    """The instance key is missing, unreadable, or does not decrypt the stored secrets."""


def load_or_create_key(path: Path) -> bytes:
    """Read the instance key, creating it (owner-only) on first use."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole to a temp file, then linked into place: a process starting at the same time
    # either wins or reads the winner's key, never a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process created it first: use theirs
    finally:
        tmp.unlink()
    return path.read_bytes().strip()


def set_secret(session: Session, key: bytes, name: str, value: str, *, actor: audit.Actor) -> None:
    row = session.get(SecretValue, name) or SecretValue(name=name, ciphertext="")
    row.ciphertext, row.updated_at = Fernet(key).encrypt(value.encode()).decode(), utcnow()
    session.add(row)
    audit.record(session, actor, "secret.set", f"secret:{name}")  # the value itself is never recorded


def get_secret(session: Session, key: bytes, name: str) -> str | None:
    row = session.get(SecretValue, name)
    if row is None:
        return None
    try:
        return Fernet(key).decrypt(row.ciphertext.encode()).decode()
    except (InvalidToken, ValueError) as exc:
        raise SecretKeyError(f"The instance key cannot decrypt the stored {name}") from exc
