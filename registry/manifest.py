"""The snapshot manifest: one repo at one full commit, the unit of publication.

One schema serves three places: the canonical JSON in the object store, the DB index, and
bundles. Canonical JSON is sorted keys, ``(",", ":")`` separators, UTF-8 and a trailing
newline; the manifest digest is the sha256 of exactly those bytes.
"""

from __future__ import annotations

import functools
import hashlib
import json
from datetime import datetime, timezone
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from registry.errors import InvalidInputError
from registry.gitobjects import GitFile, blob_oid, lfs_pointer
from registry.types import CommitStr, PathStr, RepoIdStr, RepoRef, RepoType, Sha256Str

SCHEMA = "hubgate.snapshot/1"


class ManifestEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: PathStr
    size: int
    sha256: Sha256Str
    git_oid: CommitStr  # git blob id of the content (the Hub's ETag for regular files): 40 hex, like a commit
    lfs: bool

    @field_validator("size")
    @classmethod
    def _size(cls, v: int) -> int:
        if v < 0:
            raise ValueError("size must be >= 0")
        return v

    @property
    def etag(self) -> str:
        """The id the Hub uses as ETag and HF caches use as blob name."""
        return self.sha256 if self.lfs else self.git_oid

    @property
    def tree_oid(self) -> str:
        """What git stores for this path: the pointer's blob id for LFS files."""
        return blob_oid(self.pointer) if self.lfs else self.git_oid

    @property
    def pointer(self) -> bytes:
        return lfs_pointer(self.sha256, self.size)


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_: str = SCHEMA
    repo_type: RepoType
    repo_id: RepoIdStr
    commit: CommitStr
    created_at: str
    source: dict[str, Any] = {}
    files: tuple[ManifestEntry, ...]

    @model_validator(mode="after")
    def _sorted_unique(self) -> "Manifest":
        paths = [f.path for f in self.files]
        if paths != sorted(paths) or len(set(paths)) != len(paths):
            raise ValueError("files must be sorted by path and unique")
        seen = set(paths)
        for p in paths:  # a path may not be both a file and a directory
            parts = p.split("/")
            for depth in range(1, len(parts)):
                if "/".join(parts[:depth]) in seen:
                    raise ValueError(f"{p!r} lies under a file")
        return self

    @property
    def repo(self) -> RepoRef:
        return RepoRef(self.repo_type, self.repo_id)

    @property
    def created_datetime(self) -> datetime:
        try:
            value = datetime.fromisoformat(self.created_at)
        except ValueError as exc:
            raise InvalidInputError(f"Invalid manifest created_at {self.created_at!r}") from exc
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def git_files(self) -> list[GitFile]:
        return [GitFile(f.path, f.tree_oid) for f in self.files]

    def to_canonical_json(self) -> bytes:
        return self._canonical_json

    def digest(self) -> str:
        return self._digest

    # Computed once per (frozen) manifest: a publish stores, signs and records it, each needing the bytes or
    # the digest, and a 1,000-file manifest takes ~5 ms to serialize.
    @functools.cached_property
    def _canonical_json(self) -> bytes:
        doc = self.model_dump(mode="json")
        doc["schema"] = doc.pop("schema_")
        return (json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()

    @functools.cached_property
    def _digest(self) -> str:
        return hashlib.sha256(self._canonical_json).hexdigest()

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> "Manifest":
        """A copy (with ``update`` applied) that computes its own canonical bytes: the cached ones are the
        original's."""
        copy = super().model_copy(update=update, deep=deep)
        for name in ("_canonical_json", "_digest"):
            copy.__dict__.pop(name, None)
        return copy

    @classmethod
    def from_json(cls, data: bytes) -> "Manifest":
        """Parse a stored manifest. Raises InvalidInputError on anything that is not a valid manifest."""
        try:
            doc = json.loads(data)
            if doc.get("schema") != SCHEMA:
                raise InvalidInputError(f"Unknown manifest schema {doc.get('schema')!r}")
            doc["schema_"] = doc.pop("schema")
            return cls.model_validate(doc)
        except (ValueError, TypeError, AttributeError) as exc:
            raise InvalidInputError(f"Invalid manifest: {exc}") from exc
