"""``hubgate import-bundle``: verify a bundle completely, copy its blobs in, then publish its snapshots.

Order of checks, each refusing with a BundleError and nothing published:

1. the volume list's signature and every volume's presence and size (volume sets);
2. the index's signature against the trusted keys, before any other member is read;
3. snapshots that would contradict what is already published here;
4. every small member's size and sha256 against the index; each manifest parses, is the
   canonical one the index names, and carries an OMS signature by a trusted key;
5. every blob either in the bundle (its bytes, or its Xet record) or already in the store; every
   xorb a Xet record uses either in the bundle or already stored; every blob copied in is checked
   by the blob store (size, sha256, git blob id) before it becomes visible;
6. every xorb copied in is verified chunk by chunk, and a blob carried in Xet form is rebuilt from
   the xorbs through the same verifying writer (mirror/bundles/xet.py).

Only then is each snapshot published (``publish_manifest``: manifest, original signature,
provenance and refs in one transaction). Blobs already stored are not copied again, so a
re-run after an interruption or a refusal resumes, and importing twice changes nothing. A large
blob's copy resumes inside the blob (mirror/storage/resume.py: the local store's partial file, the
S3 store's unfinished multipart upload), after checking the bytes kept against the bundle's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mirror import signing
from mirror.bundles import ordering
from mirror.bundles.readers import BundleSource, Member, open_bundle, read_small, read_verified
from mirror.bundles.format import (
    APPROVAL, BLOB, MANIFEST, XET_FILE, XORB, BundleError, Index, PublicKeys, RefEntry, SnapshotKey, member_kind,
)
from mirror.bundles.xet import XetImport
from mirror.errors import DigestMismatchError, ObjectNotFoundError
from mirror.progress import NO_PROGRESS, Progress
from mirror.publishing import publish_manifest
from mirror.storage.resume import ResumableWriter, resumable_writer
from mirror.xet.builder import XetBuilder
from mirror.scan.gate import Decisions, Gate
from mirror.storage.blobs import BlobStore
from registry import access, audit, snapshots
from registry.db import session_scope
from registry.errors import ContentBlockedError, InvalidInputError
from registry.manifest import Manifest
from registry.models import Ref, Repo, Snapshot
from registry.refs import RefName
from registry.types import RepoRef

log = logging.getLogger(__name__)


@dataclass
class ImportResult:
    index_sha256: str
    source_instance: str
    key_id: str
    form: str  # dir | tar | volumes
    published: list[SnapshotKey] = field(default_factory=list)
    unchanged: list[SnapshotKey] = field(default_factory=list)
    refs_moved: list[str] = field(default_factory=list)
    refs_skipped: list[str] = field(default_factory=list)  # their commit is not published here
    blocked: dict[str, str] = field(default_factory=dict)  # "repo@commit" -> why this side's content scan refused it
    blobs_copied: int = 0
    blobs_skipped: int = 0  # already in the store
    bytes_copied: int = 0
    restored: list[SnapshotKey] = field(default_factory=list)  # unavailable here (a lost blob) and available again
    refs_kept: list[str] = field(default_factory=list)  # "repo:ref -> commit": here newer than this bundle
    requests_fulfilled: list[str] = field(default_factory=list)  # offline requests whose revision arrived
    resumed: dict[str, int] = field(default_factory=dict)  # blob sha256 -> byte an interrupted copy went on from
    xorbs_copied: int = 0
    xorbs_skipped: int = 0  # already in the store
    xorb_bytes_copied: int = 0
    blobs_rebuilt: int = 0  # carried as a Xet record, rebuilt here from xorbs


@dataclass
class _Incoming:
    key: SnapshotKey
    existing: bool  # already published here, with the same manifest
    manifest_bytes: bytes = b""
    signature: bytes = b""
    approval: dict[str, Any] = field(default_factory=dict)
    manifest: Manifest | None = None
    signature_key: str = ""


def import_bundle(
    engine: Engine, store: BlobStore, path: Path, *, trusted: PublicKeys, actor: audit.Actor = audit.SYSTEM,
    gate: Gate | None = None, xet: XetBuilder | None = None, progress: Progress = NO_PROGRESS,
) -> ImportResult:
    """Verify the bundle at ``path`` (folder, tar, or volume set) and publish its snapshots.

    ``trusted`` maps key ids to the public keys whose bundles and snapshot signatures are
    accepted (``format.load_trusted_keys``). Raises BundleError, with nothing published, for an
    unsigned or untrusted bundle, any size or checksum mismatch, a missing or truncated volume,
    an unsafe or unlisted member, a snapshot that contradicts one published here, or blobs
    that neither the bundle nor the store hold (an earlier incremental bundle not imported yet).
    """
    with open_bundle(path, trusted) as source:
        index = source.index
        result = ImportResult(source.index_sha256, index.instance, source.signed_by, source.form)
        incoming = {k.manifest_sha256: _Incoming(k, existing) for k, existing in _check_conflicts(engine, store, index)}
        xet_in = XetImport(store, index)
        files: dict[str, tuple[int, str]] | None = None
        for member in source.members():
            kind, digest = member_kind(member.entry.path)  # type: ignore[misc]
            if kind == XET_FILE:
                xet_in.take_record(digest, read_small(member))
                continue
            if kind not in (BLOB, XORB):
                _take_small(incoming[digest], kind, read_small(member))
                continue
            if files is None:
                files = _check_snapshots(store, source, incoming, trusted, xet_in)
                copied = index.blob_members + index.members_of(XORB)
                progress.begin("copying blobs", total_bytes=sum(m.size for m in copied), total_files=len(copied))
            if kind == XORB:
                xet_in.take_xorb(member, digest)
                progress.advance(member.entry.size, files=1)
            else:
                _take_blob(store, member, files[digest], result, progress)
        if files is None:
            files = _check_snapshots(store, source, incoming, trusted, xet_in)
    if xet_in.records:
        progress.begin("rebuilding files from xorbs", total_bytes=sum(r.size for r in xet_in.records.values()),
                       total_files=len(xet_in.records))
        xet_in.rebuild(files, progress)
    result.xorbs_copied, result.xorbs_skipped = xet_in.xorbs_copied, xet_in.xorbs_skipped
    result.xorb_bytes_copied, result.blobs_rebuilt = xet_in.xorb_bytes_copied, xet_in.blobs_rebuilt
    progress.begin("scanning and publishing", total_files=len(index.snapshots))
    _publish(engine, store, index, incoming, result, actor, gate or Gate(store), progress)
    result.requests_fulfilled = ordering.fulfil_offline_requests(engine, {k.repo for k in index.snapshots}, actor)
    progress.end()
    if xet is not None:  # HUBGATE_XET=on: large files get their Xet form here (never fails the import)
        for snap in incoming.values():
            if snap.manifest is not None and f"{snap.key.repo}@{snap.key.commit}" not in result.blocked:
                try:
                    xet.build_manifest(snap.manifest)
                except Exception:  # noqa: BLE001 - served plain until `hubgate xet backfill`
                    log.exception("bundle %s: building the Xet form of %s failed", result.index_sha256[:16], snap.key)
    log.info("imported bundle %s from %s: %d published, %d unchanged, %d blobs copied, %d skipped",
             result.index_sha256[:16], index.instance, len(result.published), len(result.unchanged),
             result.blobs_copied, result.blobs_skipped)
    return result


def _check_conflicts(engine: Engine, store: BlobStore, index: Index) -> list[tuple[SnapshotKey, bool]]:
    """(snapshot, already published here) for each; refuse one that this side holds with other content."""
    out = []
    with Session(engine) as session:
        for key in index.snapshots:
            row = session.exec(
                select(Snapshot.manifest_digest).join(Repo).where(
                    Repo.repo_type == key.repo_type.value, Repo.repo_id == key.repo_id, Snapshot.commit == key.commit
                )
            ).first()
            try:
                stored = store.get_manifest(key.repo, key.commit).digest()
            except ObjectNotFoundError:
                stored = None
            if any(digest not in (None, key.manifest_sha256) for digest in (row, stored)):
                raise BundleError(f"{key} is already published here with other content; refusing the bundle")
            out.append((key, row is not None))
    return out


def _take_small(snap: _Incoming, kind: str, data: bytes) -> None:
    if kind == MANIFEST:
        snap.manifest_bytes = data
    elif kind == APPROVAL:
        snap.approval = _parse_approval(snap.key, data)
    else:
        snap.signature = data


def _parse_approval(key: SnapshotKey, data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"The approval record of {key} is not valid JSON") from exc
    if not isinstance(doc, dict) or (doc.get("repo_type"), doc.get("repo_id"), doc.get("commit")) != (
        key.repo_type.value, key.repo_id, key.commit
    ):
        raise BundleError(f"The approval record of {key} is for another snapshot")
    if not isinstance(doc.get("provenance"), dict) or not isinstance(doc.get("request"), dict | None):
        raise BundleError(f"The approval record of {key} is malformed")
    return doc


def _check_snapshots(
    store: BlobStore, source: BundleSource, incoming: dict[str, _Incoming], trusted: PublicKeys, xet_in: XetImport,
) -> dict[str, tuple[int, str]]:
    """Check every manifest and its OMS signature; return sha256 -> (size, git oid) of every file they list.

    Raises BundleError when a manifest is not the one the index names, a signature does not
    verify against a trusted key, a blob is neither in the bundle (bytes or Xet record) nor in the store,
    or a Xet record needs a xorb that is neither in the bundle nor stored.
    """
    files: dict[str, tuple[int, str]] = {}
    for snap in incoming.values():
        key = snap.key
        try:
            manifest = Manifest.from_json(snap.manifest_bytes)
        except InvalidInputError as exc:
            raise BundleError(f"The manifest of {key} is invalid: {exc.message}") from exc
        if (manifest.repo_type, manifest.repo_id, manifest.commit) != key.commit_key:
            raise BundleError(f"The manifest listed as {key} is for {manifest.repo}@{manifest.commit}")
        if manifest.digest() != key.manifest_sha256:
            raise BundleError(f"The manifest of {key} is not in canonical form")
        try:
            snap.signature_key = signing.verify(snap.signature, manifest, trusted)
        except signing.SignatureError as exc:
            raise BundleError(f"The snapshot signature of {key}: {exc.message}") from exc
        snap.manifest = manifest
        for f in manifest.files:
            files[f.sha256] = (f.size, f.git_oid)
    carried = {}
    for m in source.index.blob_members:
        if m.sha256 not in files:
            raise BundleError(f"Blob {m.sha256} is in the bundle but in none of its snapshots")
        if files[m.sha256][0] != m.size:
            raise BundleError(f"Blob {m.sha256} has {m.size} bytes in the index and {files[m.sha256][0]} in its manifest")
        carried[m.sha256] = files[m.sha256]
    xet_in.check_needs(files)
    for sha, (size, _) in files.items():
        if sha not in carried and sha not in xet_in.records and not _stored(store, sha, size):
            raise BundleError(
                f"The bundle needs blob {sha}, which it does not carry and this store does not hold: "
                f"import the bundle it continues first (index {source.index.since or 'unknown'})"
            )
    return files


def _stored(store: BlobStore, sha256: str, size: int) -> bool:
    info = store.stat(sha256)
    return info is not None and info.size == size


RESUMABLE_MIN_SIZE = 16 * 1024 * 1024  # blobs this large are copied through a partial write that survives a kill


def _take_blob(store: BlobStore, member: Member, expect: tuple[int, str], result: ImportResult,
               progress: Progress = NO_PROGRESS) -> None:
    size, git_oid = expect
    entry = member.entry
    if _stored(store, entry.sha256, size):  # verified when it was stored: do not copy it again
        member.skip()
        result.blobs_skipped += 1
        progress.advance(size, files=1)
        return
    resumable = resumable_writer(store, size=size, sha256=entry.sha256, git_oid=git_oid, what=entry.path) \
        if size >= RESUMABLE_MIN_SIZE else None
    try:
        if resumable is not None:
            _copy_resuming(member, resumable, result, progress)
        else:
            with store.ingest(size=size, sha256=entry.sha256, git_oid=git_oid, what=entry.path) as w:
                read_verified(member, _counted(w.write, progress), check_sha256=False,  # the writer hashes and checks
                              reuse_buffer=True)
                w.commit()
    except DigestMismatchError as exc:
        raise BundleError(f"{exc.message}: the bundle was altered or damaged") from exc
    result.blobs_copied += 1
    result.bytes_copied += size
    progress.advance(files=1)


def _counted(sink: Any, progress: Progress) -> Any:
    def write(data: bytes) -> None:
        sink(data)
        progress.advance(len(data))

    return write


def _copy_resuming(member: Member, w: ResumableWriter, result: ImportResult, progress: Progress) -> None:
    """Copy a member into ``w`` from byte 0. The ``w.resumed_at`` bytes a killed run left are checked against
    the member's as they pass and stored again only from where they differ (``w.reused`` were not); the
    member is read through either way, so its size is checked and the digests are the bundle's."""
    path, size = member.entry.path, member.entry.size
    if w.resumed_at:
        log.info("%s: an interrupted copy left %d of %d bytes; checking them against the bundle",
                 path, w.resumed_at, size)
    with w:
        read_verified(member, _counted(w.write, progress), check_sha256=False,  # the writer hashes and checks
                      reuse_buffer=True)  # it consumes each chunk at once
        w.commit()
    if w.reused:
        result.resumed[member.entry.sha256] = w.reused
        log.info("%s: resumed at byte %d of %d (%d bytes copied)", path, w.reused, size, size - w.reused)
    if w.reused < w.resumed_at:
        log.warning("%s: the interrupted copy's bytes from byte %d differed from the bundle's and were copied again",
                    path, w.reused)


# -- publishing ------------------------------------------------------------------------------------


def _publish(engine: Engine, store: BlobStore, index: Index, incoming: dict[str, _Incoming], result: ImportResult,
             actor: audit.Actor, gate: Gate, progress: Progress = NO_PROGRESS) -> None:
    """Publish each snapshot this side's own content scan passes (it never takes the other side's verdict;
    the people's decisions carried in the signed approval record — overrides, code approvals — do count).
    A ref moves only when this bundle is not older than what it points at here (mirror/bundles/ordering.py)."""
    in_bundle = {s.key.commit_key for s in incoming.values()}
    for key in index.snapshots:
        snap = incoming[key.manifest_sha256]
        assert snap.manifest is not None
        progress.advance(files=1)
        refs = _not_older(engine, index, key.repo,
                          [r.ref for r in index.refs if (r.repo_type, r.repo_id, r.commit) == key.commit_key], result)
        was_unavailable = snap.existing and _state(engine, key) == "unavailable"
        # A blob copied in may be one a scrub found missing: publishing again restores availability.
        if snap.existing and result.blobs_copied == result.blobs_rebuilt == 0 and _refs_in_place(engine, key, refs):
            result.unchanged.append(key)
            continue
        provenance = _provenance(index, result.index_sha256, snap)
        try:
            published = _publish_one(engine, store, snap, refs, provenance, gate, index, result, actor, key)
        except ContentBlockedError as exc:
            log.error("bundle %s: %s", result.index_sha256[:16], exc.message)
            result.blocked[f"{key.repo}@{key.commit}"] = exc.message
            with session_scope(engine) as session:
                audit.record(session, actor, "bundle.blocked", f"{key.repo}@{key.commit}", bundle=result.index_sha256,
                             reasons=(exc.scan.get("blocking") or [])[:20])
            continue
        (result.published if published.created else result.unchanged).append(key)
        if was_unavailable and _state(engine, key) == "available":
            result.restored.append(key)
        result.refs_moved += [f"{key.repo}:{name}" for name in published.refs_moved]
    for r in index.refs:  # refs that moved to snapshots an earlier bundle carried
        if (r.repo_type, r.repo_id, r.commit) not in in_bundle and _not_older(engine, index, r.repo, [r.ref], result):
            _move_ref(engine, store, r, result, actor)


def _not_older(engine: Engine, index: Index, repo: RepoRef, refs: list[RefName], result: ImportResult) -> list[RefName]:
    """``refs`` without those that point here at a snapshot newer than this bundle (recorded as kept)."""
    out = []
    with Session(engine) as session:
        for ref in refs:
            newer = ordering.newer_here(session, repo, ref.name, index.created_at)
            if newer is None:
                out.append(ref)
            else:
                result.refs_kept.append(f"{repo}:{ref.name} -> {newer}")
    return out


def _state(engine: Engine, key: SnapshotKey) -> str | None:
    with Session(engine) as session:
        return session.exec(select(Snapshot.state).join(Repo).where(
            Repo.repo_type == key.repo_type.value, Repo.repo_id == key.repo_id, Snapshot.commit == key.commit)).first()


def _publish_one(engine: Engine, store: BlobStore, snap: _Incoming, refs: list[RefName], provenance: dict[str, Any],
                 gate: Gate, index: Index, result: ImportResult, actor: audit.Actor,
                 key: SnapshotKey) -> snapshots.PublishResult:
    assert snap.manifest is not None
    return publish_manifest(
            engine, store, snap.manifest, refs, signature=snap.signature,
            provenance=provenance, gate=gate, decisions=Decisions.from_provenance(provenance["origin"]),
            in_transaction=lambda s, k=key: _record_import(s, k, provenance, index, result, actor),
        )


def _record_import(session: Session, key: SnapshotKey, provenance: dict[str, Any], index: Index,
                   result: ImportResult, actor: audit.Actor) -> None:
    """In the publishing transaction: the audit entry, and a repo gated upstream stays gated on this side."""
    audit.record(session, actor, "bundle.import", f"{key.repo}@{key.commit}", bundle=result.index_sha256,
                 source_instance=index.instance, key_id=index.key_id)
    access.gate_if_gated_upstream(session, key.repo, list(provenance.get("findings") or []), actor=actor)


def _move_ref(engine: Engine, store: BlobStore, r: RefEntry, result: ImportResult, actor: audit.Actor) -> None:
    label = f"{r.repo}:{r.name}"
    with session_scope(engine) as session:
        repo_row = session.exec(select(Repo).where(Repo.repo_type == r.repo_type.value, Repo.repo_id == r.repo_id)).first()
        if repo_row is None or session.exec(
            select(Snapshot.pk).where(Snapshot.repo_pk == repo_row.pk, Snapshot.commit == r.commit)
        ).first() is None:
            result.refs_skipped.append(label)
            return
        row = session.get(Ref, (repo_row.pk, r.name))
        if row is not None and (row.commit, row.kind) == (r.commit, r.kind):
            return
        snapshots.move_ref(session, r.repo, r.ref, r.commit, actor=actor)
    store.put_ref(r.repo, r.ref.full, r.commit)  # as publish_manifest keeps its copy
    result.refs_moved.append(label)


def _refs_in_place(engine: Engine, key: SnapshotKey, refs: list[RefName]) -> bool:
    with Session(engine) as session:
        repo_row = session.exec(select(Repo).where(Repo.repo_type == key.repo_type.value, Repo.repo_id == key.repo_id)).first()
        if repo_row is None:
            return False
        for ref in refs:
            row = session.get(Ref, (repo_row.pk, ref.name))
            if row is None or row.commit != key.commit or row.kind != ref.kind:
                return False
    return True


def _provenance(index: Index, index_sha256: str, snap: _Incoming) -> dict[str, Any]:
    """Where the snapshot came from and who approved it, keeping the exporting side's own record."""
    request = snap.approval.get("request") or {}
    origin = snap.approval.get("provenance") or {}
    return {
        "source": "bundle",
        "source_instance": index.instance,
        "key_id": index.key_id,
        "signature_key_id": snap.signature_key,
        "bundle": index_sha256,
        "exported_at": index.created_at,
        "approved_by": request.get("approved_by", origin.get("approved_by")),
        "approved_at": request.get("approved_at", origin.get("approved_at")),
        "requested_by": request.get("requested_by", origin.get("requested_by")),
        "findings": request.get("findings", origin.get("findings", [])),
        "origin": origin,
    }
