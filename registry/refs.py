"""Ref names as the Hub spells them: branches ``main``, tags ``v1.0``, ``refs/pr/N``, ``refs/convert/X``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from registry.errors import InvalidInputError
from registry.types import is_commit_sha, validate_revision

_PR_RE = re.compile(r"^refs/pr/[1-9][0-9]{0,8}$")


@dataclass(frozen=True, slots=True)
class RefName:
    name: str  # what a client sends as revision
    kind: str  # branch | tag | pr | convert

    @property
    def full(self) -> str:
        if self.kind == "branch":
            return f"refs/heads/{self.name}"
        if self.kind == "tag":
            return f"refs/tags/{self.name}"
        return self.name


def parse_ref(value: str) -> RefName:
    """Parse ``main``, ``refs/heads/x``, ``refs/tags/v1``, ``refs/pr/1`` or ``refs/convert/parquet``."""
    validate_revision(value)
    if is_commit_sha(value):
        raise InvalidInputError(f"Invalid ref name {value!r}: a ref may not look like a commit sha")
    if value.startswith("refs/heads/"):
        return RefName(_plain(value[len("refs/heads/"):], value), "branch")
    if value.startswith("refs/tags/"):
        return RefName(_plain(value[len("refs/tags/"):], value), "tag")
    if value.startswith("refs/convert/"):
        _plain(value[len("refs/convert/"):], value)
        return RefName(value, "convert")
    if value.startswith("refs/"):
        if _PR_RE.fullmatch(value):
            return RefName(value, "pr")
        raise InvalidInputError(f"Invalid ref name {value!r}")
    return RefName(_plain(value, value), "branch")


def _plain(name: str, original: str) -> str:
    if not name or name.startswith("refs/") or is_commit_sha(name):
        raise InvalidInputError(f"Invalid ref name {original!r}")
    return name
