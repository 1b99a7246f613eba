"""The air-gap bundle format, version 1: what a bundle holds, how it is named and signed.

A bundle is one directory, one tar file, or a tar split into volumes. Inside, members come in
this order (a tar holds exactly these regular files, in this order; folder entries are tolerated
and nothing else is)::

    index.json                            the signed index: every other member's path, size and sha256
    index.json.sig                        detached DSSE-style signature of index.json (ECDSA P-256)
    snapshots/<manifest sha256>/manifest.json   the manifest, canonical bytes as stored
    snapshots/<manifest sha256>/signature.sig   its OMS signature bundle (mirror/signing.py)
    snapshots/<manifest sha256>/approval.json   who approved it, when, the findings, its provenance
    xet/<aa>/<sha256>.json                a file's Xet reconstruction record, in place of its bytes (version 2)
    xorbs/<aa>/<xorb hash>                the Xet xorbs those records use, unless an earlier bundle carried them
    blobs/<aa>/<sha256>                   file bytes (only those no earlier bundle carried)

Version 2 adds the Xet members: a large file whose Xet form is stored travels as its record plus the
xorbs the sealed side does not have (a fine-tune carries only its new chunks), and the sealed side
rebuilds its bytes from them (mirror/bundles/xet.py). Its index lists ``xorbs``, every xorb this bundle
and the ones it continues carried, the way ``watermark`` lists snapshots. A bundle without Xet members
and without that list is written as version 1, byte for byte as before.

Member names are built from lowercase hex digests only, so they are the same on every file
system (case-insensitive FAT/exFAT media included) and never need sanitising: an importer
accepts exactly the names the signed index lists. The index comes first, so an importer
checks its signature before it reads any other member; it is written before the blobs
because the blob digests are known from the manifests.

A tar split into volumes (``bundle.tar.000``, ``.001``, …) comes with ``bundle.tar.volumes.json``
(+ ``.sig``): each volume's size and sha256, so a missing or truncated volume is named before
anything is read. Tar forms also leave ``bundle.tar.index.json`` (+ ``.sig``), a copy of the
index to keep on the exporting side for the next ``--since``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mirror.signing import SignatureError, Signer, key_id, load_public_key, pae
from registry.errors import HubgateError, InvalidInputError
from registry.refs import RefName, parse_ref
from registry.types import CommitStr, RepoIdStr, RepoRef, RepoType, Sha256Str, validate_commit, validate_repo_id, validate_sha256

FORMAT = "hubgate.bundle"
VERSION = 1  # a bundle without Xet members
XET_VERSION = 2  # a bundle whose index lists xorbs
VERSIONS = (VERSION, XET_VERSION)
VOLUMES_FORMAT = "hubgate.bundle.volumes"

INDEX_NAME = "index.json"
SIG_SUFFIX = ".sig"
INDEX_SIG_NAME = INDEX_NAME + SIG_SUFFIX
VOLUMES_SUFFIX = ".volumes.json"  # bundle.tar.volumes.json
SIDECAR_SUFFIX = ".index.json"  # bundle.tar.index.json
INDEX_PAYLOAD_TYPE = "application/vnd.hubgate.bundle.index.v1+json"
VOLUMES_PAYLOAD_TYPE = "application/vnd.hubgate.bundle.volumes.v1+json"

MANIFEST, SIGNATURE, APPROVAL, BLOB = "manifest", "signature", "approval", "blob"
XET_FILE, XORB = "xet-file", "xorb"
_SNAPSHOT_FILES = {MANIFEST: "manifest.json", SIGNATURE: "signature.sig", APPROVAL: "approval.json"}
_MEMBER_RE = re.compile(
    r"^(?:(?P<dir>blobs|xet|xorbs)/(?P<prefix>[0-9a-f]{2})/(?P<hash>[0-9a-f]{64})(?P<ext>\.json)?"
    r"|snapshots/(?P<snap>[0-9a-f]{64})/(?P<file>manifest\.json|signature\.sig|approval\.json))$"
)
_DIR_KINDS = {"blobs": (BLOB, ""), "xet": (XET_FILE, ".json"), "xorbs": (XORB, "")}
_ORDER = {MANIFEST: 0, SIGNATURE: 0, APPROVAL: 0, XET_FILE: 1, XORB: 2, BLOB: 3}  # members come in this order

CHUNK_SIZE = 8 * 1024 * 1024
MIN_VOLUME_SIZE = 4096
# Caps, checked before anything is trusted or read into memory.
MAX_INDEX_SIZE = 256 * 1024 * 1024
MAX_SIG_SIZE = 64 * 1024
MAX_MEMBERS = 2_000_000
MAX_SMALL_SIZE = {MANIFEST: 64 * 1024 * 1024, SIGNATURE: 4 * 1024 * 1024, APPROVAL: 16 * 1024 * 1024,
                  XET_FILE: 64 * 1024 * 1024}
MAX_XORB_SIZE = 65 * 1024 * 1024  # mirror/xet/formats.py MAX_XORB_BYTES: 64 MiB of chunks, headers and footer
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

PublicKeys = Mapping[str, ec.EllipticCurvePublicKey]


class BundleError(HubgateError):
    """A bundle cannot be exported or imported: unsigned, untrusted, damaged, unsafe or inconsistent."""


# -- member names ------------------------------------------------------------------------------


def blob_member(sha256: str) -> str:
    return f"blobs/{sha256[:2]}/{sha256}"


def snapshot_member(manifest_sha256: str, kind: str) -> str:
    return f"snapshots/{manifest_sha256}/{_SNAPSHOT_FILES[kind]}"


def xet_file_member(sha256: str) -> str:
    return f"xet/{sha256[:2]}/{sha256}.json"


def xorb_member(xorb_hash: str) -> str:
    return f"xorbs/{xorb_hash[:2]}/{xorb_hash}"


def member_kind(path: str) -> tuple[str, str] | None:
    """(kind, digest) of a bundle member name: the blob's sha256 (blob, Xet record), the xorb's hash or the
    manifest's; None if not a member name."""
    m = _MEMBER_RE.match(path)
    if m is None:
        return None
    if m.group("hash"):
        kind, ext = _DIR_KINDS[m.group("dir")]
        ok = m.group("hash")[:2] == m.group("prefix") and (m.group("ext") or "") == ext
        return (kind, m.group("hash")) if ok else None
    kind = next(k for k, name in _SNAPSHOT_FILES.items() if name == m.group("file"))
    return kind, m.group("snap")


def volume_name(bundle: str, number: int) -> str:
    return f"{bundle}.{number:03d}"


def canonical_json(doc: Any) -> bytes:
    return (json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the index -----------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MemberEntry(_Frozen):
    path: str
    size: int = Field(ge=0)
    sha256: Sha256Str


class SnapshotKey(_Frozen):
    """One published snapshot, as bundles and watermarks name it."""

    repo_type: RepoType
    repo_id: RepoIdStr
    commit: CommitStr
    manifest_sha256: Sha256Str

    @property
    def repo(self) -> RepoRef:
        return RepoRef(self.repo_type, self.repo_id)

    @property
    def commit_key(self) -> tuple[RepoType, str, str]:
        return self.repo_type, self.repo_id, self.commit

    def __str__(self) -> str:
        return f"{self.repo}@{self.commit}"


class RefEntry(_Frozen):
    """A ref of the exporting instance pointing at a commit this bundle or an earlier one carried."""

    repo_type: RepoType
    repo_id: str
    name: str
    kind: str
    commit: str

    @model_validator(mode="after")
    def _valid(self) -> "RefEntry":
        validate_repo_id(self.repo_id)
        validate_commit(self.commit)
        ref = RefName(self.name, self.kind)
        if parse_ref(ref.full) != ref:
            raise ValueError(f"invalid ref {self.name!r} of kind {self.kind!r}")
        return self

    @property
    def ref(self) -> RefName:
        return RefName(self.name, self.kind)

    @property
    def repo(self) -> RepoRef:
        return RepoRef(self.repo_type, self.repo_id)


class Index(_Frozen):
    format: Literal["hubgate.bundle"] = FORMAT
    version: int = VERSION
    instance: str = Field(min_length=1, max_length=100)
    key_id: str
    created_at: str
    since: str | None = None  # sha256 of the index of the export this one continues
    snapshots: tuple[SnapshotKey, ...]
    refs: tuple[RefEntry, ...] = ()
    watermark: tuple[SnapshotKey, ...]  # every snapshot this bundle and the ones before it carried
    members: tuple[MemberEntry, ...]  # in stream order: snapshot members, Xet records, xorbs, then blobs
    xorbs: tuple[str, ...] = ()  # version 2: every xorb this bundle and the ones before it carried, sorted

    @field_validator("key_id")
    @classmethod
    def _key_id(cls, v: str) -> str:
        return validate_sha256(v)

    @field_validator("created_at")
    @classmethod
    def _created_at(cls, v: str) -> str:
        datetime.fromisoformat(v)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "Index":
        if len(self.members) > MAX_MEMBERS:
            raise ValueError(f"more than {MAX_MEMBERS} members")
        if (self.version == XET_VERSION) != bool(self.xorbs):
            raise ValueError(f"a version {self.version} index {'must' if self.version == XET_VERSION else 'cannot'} "
                             "list xorbs")
        if list(self.xorbs) != sorted(set(self.xorbs)) or not all(_HEX64.match(x) for x in self.xorbs):
            raise ValueError("the xorb list must be sorted, without duplicates, of 64-hex hashes")
        xorbs = set(self.xorbs)
        seen: set[str] = set()
        phase = 0
        for m in self.members:
            kind = member_kind(m.path)
            if kind is None:
                raise ValueError(f"invalid member name {m.path!r}")
            if m.path in seen:
                raise ValueError(f"duplicate member {m.path!r}")
            seen.add(m.path)
            if _ORDER[kind[0]] < phase:
                raise ValueError(f"member {m.path!r} is out of order (snapshots, Xet records, xorbs, then blobs)")
            phase = _ORDER[kind[0]]
            if kind[0] == XET_FILE and self.version != XET_VERSION:
                raise ValueError(f"Xet member {m.path!r} in a version {self.version} index")
            if kind[0] == BLOB and kind[1] != m.sha256:
                raise ValueError(f"blob member {m.path!r} has sha256 {m.sha256}")
            if kind[0] == XORB and (kind[1] not in xorbs or m.size > MAX_XORB_SIZE):
                raise ValueError(f"xorb member {m.path!r} is not in the index's xorb list or over {MAX_XORB_SIZE} bytes")
            if kind[0] in MAX_SMALL_SIZE and m.size > MAX_SMALL_SIZE[kind[0]]:
                raise ValueError(f"member {m.path!r} is larger than {MAX_SMALL_SIZE[kind[0]]} bytes")
        keys = [s.commit_key for s in self.snapshots]
        if len(set(keys)) != len(keys):
            raise ValueError("a snapshot is listed twice")
        by_path = {m.path: m for m in self.members}
        expected = set()
        for s in self.snapshots:
            for kind in _SNAPSHOT_FILES:
                expected.add(snapshot_member(s.manifest_sha256, kind))
            manifest = by_path.get(snapshot_member(s.manifest_sha256, MANIFEST))
            if manifest is None or manifest.sha256 != s.manifest_sha256:
                raise ValueError(f"the manifest of {s} is missing or has another sha256")
        listed = {p for p in by_path if member_kind(p)[0] in _SNAPSHOT_FILES}  # type: ignore[index]
        if listed != expected:
            raise ValueError(f"snapshot members without a snapshot: {sorted(listed - expected)[:3]}")
        if not set(self.snapshots) <= set(self.watermark):
            raise ValueError("the watermark does not include the bundle's own snapshots")
        return self

    @property
    def blob_members(self) -> list[MemberEntry]:
        return [m for m in self.members if m.path.startswith("blobs/")]

    def members_of(self, kind: str) -> list[MemberEntry]:
        return [m for m in self.members if member_kind(m.path)[0] == kind]  # type: ignore[index]

    def to_bytes(self) -> bytes:
        doc = self.model_dump(mode="json")
        if not doc["xorbs"]:  # version 1: the bytes earlier hubgates write and read
            del doc["xorbs"]
        return canonical_json(doc)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Index":
        """Parse a signature-verified index. Raises BundleError naming what is wrong."""
        doc = _load_json(data, "index.json")
        if doc.get("format") != FORMAT:
            raise BundleError(f"index.json is not a hubgate bundle index (format {doc.get('format')!r})")
        if doc.get("version") not in VERSIONS:
            raise BundleError(f"Bundle format version {doc.get('version')!r} is not supported "
                              f"(this hubgate reads {' and '.join(map(str, VERSIONS))})")
        try:
            return cls.model_validate(doc)
        except (ValidationError, InvalidInputError) as exc:
            raise BundleError(f"Invalid bundle index: {exc}") from exc


class VolumeEntry(_Frozen):
    name: str
    size: int = Field(gt=0)
    sha256: Sha256Str


class VolumeList(_Frozen):
    format: Literal["hubgate.bundle.volumes"] = VOLUMES_FORMAT
    version: int = VERSION
    bundle: str  # the tar's name without the volume number: bundle.tar
    key_id: str
    index_sha256: str
    volume_size: int = Field(ge=MIN_VOLUME_SIZE)
    volumes: tuple[VolumeEntry, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> "VolumeList":
        if "/" in self.bundle or "\\" in self.bundle or self.bundle in ("", ".", ".."):
            raise ValueError(f"invalid bundle name {self.bundle!r}")
        for number, v in enumerate(self.volumes):
            if v.name != volume_name(self.bundle, number):
                raise ValueError(f"volume {number} is named {v.name!r}")
            last = number == len(self.volumes) - 1
            if v.size > self.volume_size or (not last and v.size != self.volume_size):
                raise ValueError(f"volume {v.name} has {v.size} bytes with a volume size of {self.volume_size}")
        return self

    @property
    def total_size(self) -> int:
        return sum(v.size for v in self.volumes)

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes) -> "VolumeList":
        doc = _load_json(data, "the volume list")
        if doc.get("format") != VOLUMES_FORMAT or doc.get("version") != VERSION:
            raise BundleError(f"Unsupported volume list (format {doc.get('format')!r}, version {doc.get('version')!r})")
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            raise BundleError(f"Invalid volume list: {exc}") from exc


def _load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BundleError(f"{what} is not a JSON object")
    return doc


# -- signatures ----------------------------------------------------------------------------------


def sign_detached(signer: Signer, payload_type: str, data: bytes) -> bytes:
    """A detached DSSE-style signature of ``data``: ECDSA P-256 over PAE(payload_type, data)."""
    sig = signer.private_key.sign(pae(payload_type, data), ec.ECDSA(hashes.SHA256()))
    return canonical_json({
        "payloadType": payload_type,
        "signatures": [{"keyid": signer.key_id, "sig": base64.b64encode(sig).decode()}],
    })


def verify_detached(sig_bytes: bytes, data: bytes, payload_type: str, trusted: PublicKeys, what: str) -> str:
    """Check a detached signature of ``data`` against the trusted keys. Returns the signing key id.

    Raises BundleError when the signature is malformed, for another payload type, by an
    untrusted key, or does not verify.
    """
    try:
        doc = json.loads(sig_bytes)
        if doc["payloadType"] != payload_type:
            raise BundleError(f"{what} signature is for {doc['payloadType']!r}, not {payload_type!r}")
        signatures = [(s["keyid"], base64.b64decode(s["sig"], validate=True)) for s in doc["signatures"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"Malformed {what} signature: {exc}") from exc
    if not signatures:
        raise BundleError(f"{what} is not signed")
    signed_by = [kid for kid, _ in signatures]
    for kid, sig in signatures:
        key = trusted.get(kid) if isinstance(kid, str) else None
        if key is None:
            continue
        try:
            key.verify(sig, pae(payload_type, data), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise BundleError(f"The {what} signature by key {kid[:16]}… does not verify: the bundle was altered") from exc
        return kid
    raise BundleError(f"{what} is signed by an untrusted key ({', '.join(str(k)[:16] + '…' for k in signed_by)})")


def load_trusted_keys(paths: Iterable[Path]) -> dict[str, ec.EllipticCurvePublicKey]:
    """key id -> public key for PEM files (``HUBGATE_TRUSTED_KEYS``). Raises BundleError naming a bad file."""
    trusted: dict[str, ec.EllipticCurvePublicKey] = {}
    for path in paths:
        try:
            key = load_public_key(Path(path).read_bytes(), str(path))
        except OSError as exc:
            raise BundleError(f"Cannot read the trusted key {path}: {exc}") from exc
        except SignatureError as exc:
            raise BundleError(exc.message) from exc
        trusted[key_id(key)] = key
    return trusted


def own_key(signer: Signer) -> dict[str, ec.EllipticCurvePublicKey]:
    """The signer's own public key as a trusted set (reading back one's own exports)."""
    return {signer.key_id: signer.private_key.public_key()}
