"""The one module that builds storage keys. Every other module asks here.

::

    <root>/
      hubgate-layout                              "1": the layout version; an unknown value refuses to start
      blobs/sha256/ab/cd/abcdef…(64 hex)          file bytes, immutable, stored once across repos and revisions
      manifests/models--org--name/<commit>.json   canonical snapshot manifest (HF cache naming: type--org--name)
      manifests/models--org--name/<commit>.json.sig  its OMS signature bundle (mirror/signing.py)
      manifests/models--org--name/<commit>.provenance.json  who published it, approved by whom
      quarantine/sha256/<hex>                     blobs that failed a scrub, kept for inspection
      refs/models--org--name/<ref>                commit sha; a copy written after the DB commit (the DB decides)
      uploads/<uuid>                              in-flight writes whose sha256 is not known yet

Repo ids never contain ``--`` (registry.types), so ``models--org--name`` is unambiguous.
"""

from __future__ import annotations

import re
import uuid

from registry.types import RepoRef, RepoType, validate_commit, validate_repo_id, validate_sha256

LAYOUT_VERSION = "1"
LAYOUT_KEY = "hubgate-layout"
BLOBS_PREFIX = "blobs/sha256/"
MANIFESTS_PREFIX = "manifests/"
REFS_PREFIX = "refs/"
UPLOADS_PREFIX = "uploads/"
QUARANTINE_PREFIX = "quarantine/sha256/"

_BLOB_KEY_RE = re.compile(r"^blobs/sha256/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})$")
_MANIFEST_KEY_RE = re.compile(r"^manifests/(models|datasets)--(.+)/([0-9a-f]{40})\.json$")


def blob_key(sha256: str) -> str:
    validate_sha256(sha256)
    return f"{BLOBS_PREFIX}{sha256[:2]}/{sha256[2:4]}/{sha256}"


def digest_from_blob_key(key: str) -> str | None:
    m = _BLOB_KEY_RE.match(key)
    if not m or m.group(3)[:2] != m.group(1) or m.group(3)[2:4] != m.group(2):
        return None
    return m.group(3)


def manifest_key(repo: RepoRef, commit: str) -> str:
    validate_commit(commit)
    return f"{MANIFESTS_PREFIX}{repo.storage_name}/{commit}.json"


def parse_manifest_key(key: str) -> tuple[RepoRef, str] | None:
    m = _MANIFEST_KEY_RE.match(key)
    if not m:
        return None
    repo_id = m.group(2).replace("--", "/")
    validate_repo_id(repo_id)
    return RepoRef(RepoType.parse(m.group(1)), repo_id), m.group(3)


def signature_key(repo: RepoRef, commit: str) -> str:
    """The OMS signature bundle of a manifest, beside it."""
    return manifest_key(repo, commit) + ".sig"


def provenance_key(repo: RepoRef, commit: str) -> str:
    """Who published a snapshot, from where, approved by whom: lets rebuild-index restore it."""
    validate_commit(commit)
    return f"{MANIFESTS_PREFIX}{repo.storage_name}/{commit}.provenance.json"


def parse_ref_key(key: str) -> tuple[RepoRef, str] | None:
    """(repo, ref name) of a ``refs/…`` key; ref names may contain ``/`` (``refs/pr/1``)."""
    if not key.startswith(REFS_PREFIX):
        return None
    storage_name, _, name = key[len(REFS_PREFIX):].partition("/")
    kind, sep, rest = storage_name.partition("--")
    if not sep or kind not in ("models", "datasets") or not name:
        return None
    repo_id = rest.replace("--", "/")
    validate_repo_id(repo_id)
    return RepoRef(RepoType.parse(kind), repo_id), name


def ref_key(repo: RepoRef, ref_name: str) -> str:
    return f"{REFS_PREFIX}{repo.storage_name}/{ref_name}"


def quarantine_key(sha256: str) -> str:
    validate_sha256(sha256)
    return f"{QUARANTINE_PREFIX}{sha256}"


def upload_key() -> str:
    return f"{UPLOADS_PREFIX}{uuid.uuid4().hex}"
