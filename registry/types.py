"""Value types and the input grammar shared by every layer.

Every repo id, revision and file path that enters hubgate (URL, CLI, bundle, upstream
listing) goes through the validators here before any lookup, so that nothing downstream
ever joins an unchecked string onto a path or a storage key.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator

from registry.errors import InvalidInputError

_REPO_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_REPO_ID_RE = re.compile(rf"^{_REPO_PART}(/{_REPO_PART})?$")
_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_REF_RE = re.compile(r"^[A-Za-z0-9._-][A-Za-z0-9._/-]{0,199}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")

MAX_PATH_BYTES = 1024
MAX_SEGMENT_BYTES = 255


class RepoType(str, enum.Enum):
    MODEL = "model"
    DATASET = "dataset"

    @property
    def plural(self) -> str:
        return self.value + "s"

    @classmethod
    def parse(cls, value: str) -> "RepoType":
        for member in cls:
            if value in (member.value, member.plural):
                return member
        raise InvalidInputError(f"Invalid repo type {value!r}: expected 'model' or 'dataset'")


@dataclass(frozen=True, slots=True)
class RepoRef:
    """One repo: its type and its id (``org/name`` or a single-segment legacy name)."""

    type: RepoType
    id: str

    @classmethod
    def parse(cls, repo_type: str | RepoType, repo_id: str) -> "RepoRef":
        rtype = repo_type if isinstance(repo_type, RepoType) else RepoType.parse(repo_type)
        return cls(rtype, validate_repo_id(repo_id))

    @property
    def storage_name(self) -> str:
        """The HF cache naming, ``models--org--name``: unambiguous because ids never hold ``--``."""
        return f"{self.type.plural}--{self.id.replace('/', '--')}"

    def __str__(self) -> str:
        return f"{self.type.value}:{self.id}"


def validate_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it follows the Hub's grammar (made stricter), else raise InvalidInputError."""
    if not isinstance(repo_id, str) or not _REPO_ID_RE.fullmatch(repo_id):
        raise InvalidInputError(
            f"Invalid repo id {repo_id!r}: expected 'name' or 'org/name' of letters, digits, '.', '_', '-'"
        )
    if "--" in repo_id or ".." in repo_id or repo_id.endswith((".git", ".", "-")):
        raise InvalidInputError(f"Invalid repo id {repo_id!r}: '--', '..' and a trailing '.git', '.', '-' are not allowed")
    return repo_id


def is_commit_sha(value: str) -> bool:
    return bool(_SHA1_RE.fullmatch(value))


def validate_commit(value: str) -> str:
    if not is_commit_sha(value):
        raise InvalidInputError(f"Invalid commit {value!r}: expected 40 lowercase hex characters")
    return value


def validate_sha256(value: str) -> str:
    if not _SHA256_RE.fullmatch(value):
        raise InvalidInputError(f"Invalid sha256 {value!r}: expected 64 lowercase hex characters")
    return value


def validate_revision(revision: str) -> str:
    """A revision is a commit sha or a ref name (``main``, ``v1.0``, ``refs/pr/1``)."""
    if is_commit_sha(revision):
        return revision
    if (
        not _REF_RE.fullmatch(revision)
        or ".." in revision
        or "//" in revision
        or revision.endswith(("/", ".lock", "."))
    ):
        raise InvalidInputError(f"Invalid revision {revision!r}")
    return revision


def validate_path(path: str) -> str:
    """Return ``path`` if it is a safe relative file path inside a repo, else raise InvalidInputError.

    Rejects absolute paths, empty, ``.`` and ``..`` segments, backslashes, control characters,
    non-NFC text and over-long names, so that no client can be made to write outside its folder.
    """
    if not isinstance(path, str) or not path:
        raise InvalidInputError("Invalid path: empty")
    if _CONTROL_RE.search(path) or "\\" in path:
        raise InvalidInputError(f"Invalid path {path!r}: control characters and backslashes are not allowed")
    if unicodedata.normalize("NFC", path) != path:
        raise InvalidInputError(f"Invalid path {path!r}: not NFC-normalised")
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise InvalidInputError(f"Invalid path: longer than {MAX_PATH_BYTES} bytes")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidInputError(f"Invalid path {path!r}: empty, '.' or '..' segment")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidInputError(f"Invalid path {path!r}: a segment is longer than {MAX_SEGMENT_BYTES} bytes")
    return path


# Pydantic field types for documents (manifests, bundle indexes) that carry these values.
RepoIdStr = Annotated[str, AfterValidator(validate_repo_id)]
CommitStr = Annotated[str, AfterValidator(validate_commit)]
Sha256Str = Annotated[str, AfterValidator(validate_sha256)]
PathStr = Annotated[str, AfterValidator(validate_path)]
