"""The one module that builds storage keys. Every other module asks here.

::

    <root>/
      hubgate-layout                              "1": the layout version; an unknown value refuses to start
      blobs/sha256/ab/cd/abcdef…(64 hex)          file bytes, immutable, stored once across repos and revisions
      manifests/models--org--name/<commit>.json   canonical snapshot manifest (HF cache naming: type--org--name)
      manifests/models--org--name/<commit>.json.sig  its OMS signature bundle (mirror/signing.py)
      manifests/models--org--name/<commit>.provenance.json  who published it, approved by whom, its content scan
      manifests/models--org--name/<commit>.provenance.json.sig  DSSE signature of that record (mirror/signing.py)
      quarantine/sha256/<hex>                     blobs that failed a scrub, kept for inspection
      refs/models--org--name/<ref>                commit sha; a copy written after the DB commit (the DB decides)
      uploads/<uuid>                              in-flight writes whose sha256 is not known yet
      xorbs/ab/<xorb hash>                        Xet xorbs (chunks of large files), verified, shared by every file
      shards/ab/<sha256 of the shard>             Xet shards as hf_xet produced them (file terms, xorb chunk lists)
      xet/files/ab/<xet file hash>.json           a file's Xet reconstruction: its terms, xorb byte ranges, sha256
      xet/sha256/ab/cd/<sha256>                   the Xet file hash of a blob, once its reconstruction is stored
      xet/chunks/ab/<chunk hash>                  xorb holding a dedup-eligible chunk (answers hf_xet's dedup query)
      xet/xorb-files/ab/<xorb hash>               Xet file hash of a file that uses the xorb (widens a dedup answer)
      quarantine/xorbs/<hash>                     xorbs that failed a verify

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


def provenance_signature_key(repo: RepoRef, commit: str) -> str:
    """The DSSE signature of a snapshot's provenance (scan records, approvals) by the instance that wrote it."""
    return provenance_key(repo, commit) + ".sig"


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


# -- Xet (mirror/xet/): hashes are the protocol's 64-hex string form, validated by the callers' parsers
XORBS_PREFIX = "xorbs/"
SHARDS_PREFIX = "shards/"
XET_FILES_PREFIX = "xet/files/"
XET_SHA256_PREFIX = "xet/sha256/"
XET_CHUNKS_PREFIX = "xet/chunks/"
XET_XORB_FILES_PREFIX = "xet/xorb-files/"
XORB_QUARANTINE_PREFIX = "quarantine/xorbs/"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_XORB_KEY_RE = re.compile(r"^xorbs/([0-9a-f]{2})/([0-9a-f]{64})$")
_SHARD_KEY_RE = re.compile(r"^shards/([0-9a-f]{2})/([0-9a-f]{64})$")
_XET_FILE_KEY_RE = re.compile(r"^xet/files/([0-9a-f]{2})/([0-9a-f]{64})\.json$")


def _hex64(value: str) -> str:
    if not _HEX64.match(value):
        raise ValueError(f"not a 64-hex hash: {value[:80]!r}")
    return value


def xorb_key(xorb_hash: str) -> str:
    return f"{XORBS_PREFIX}{_hex64(xorb_hash)[:2]}/{xorb_hash}"


def xorb_from_key(key: str) -> str | None:
    m = _XORB_KEY_RE.match(key)
    return m.group(2) if m and m.group(2)[:2] == m.group(1) else None


def shard_key(shard_sha256: str) -> str:
    return f"{SHARDS_PREFIX}{_hex64(shard_sha256)[:2]}/{shard_sha256}"


def shard_from_key(key: str) -> str | None:
    m = _SHARD_KEY_RE.match(key)
    return m.group(2) if m and m.group(2)[:2] == m.group(1) else None


def xet_file_key(file_hash: str) -> str:
    return f"{XET_FILES_PREFIX}{_hex64(file_hash)[:2]}/{file_hash}.json"


def xet_file_from_key(key: str) -> str | None:
    m = _XET_FILE_KEY_RE.match(key)
    return m.group(2) if m and m.group(2)[:2] == m.group(1) else None


def xet_sha256_key(sha256: str) -> str:
    validate_sha256(sha256)
    return f"{XET_SHA256_PREFIX}{sha256[:2]}/{sha256[2:4]}/{sha256}"


def xet_chunk_key(chunk_hash: str) -> str:
    return f"{XET_CHUNKS_PREFIX}{_hex64(chunk_hash)[:2]}/{chunk_hash}"


def xet_xorb_file_key(xorb_hash: str) -> str:
    return f"{XET_XORB_FILES_PREFIX}{_hex64(xorb_hash)[:2]}/{xorb_hash}"


def xorb_quarantine_key(xorb_hash: str) -> str:
    return f"{XORB_QUARANTINE_PREFIX}{_hex64(xorb_hash)}"
