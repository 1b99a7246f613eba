"""``hubgate export``: published snapshots become a signed, incremental bundle (folder, tar or tar volumes).

The plan (which snapshots, which blobs, the small members) is made from the DB and the store
first; the index is then signed and written first, and the blobs are streamed from the store
in chunks, each checked against its sha256 on the way (a bit-rotten blob fails the export here
rather than the import on the other side). Memory does not grow with blob size.

Incremental: the index carries a watermark, every snapshot this export and the ones it
continues carried. An export ``since`` a watermark leaves out those snapshots and every blob
they hold (the other side has them, if it imported the earlier bundles).

Xet (``xet=True``, the default): a new blob whose Xet form is stored travels as its record and the
xorbs no earlier bundle carried, instead of its bytes (mirror/bundles/xet.py); the index then lists
every xorb carried so far (format version 2). ``xet=False`` writes a version 1 bundle of plain blobs,
for a sealed side whose hubgate predates version 2.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Literal

from sqlalchemy import and_, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mirror.bundles.readers import read_index
from mirror.bundles.writers import DirWriter, TarWriter
from mirror.bundles.format import (
    APPROVAL, INDEX_NAME, INDEX_PAYLOAD_TYPE, INDEX_SIG_NAME, MANIFEST, MIN_VOLUME_SIZE, SIDECAR_SUFFIX, SIG_SUFFIX,
    SIGNATURE, VOLUMES_PAYLOAD_TYPE, VOLUMES_SUFFIX, BundleError, Index, MemberEntry, PublicKeys, RefEntry,
    SnapshotKey, VolumeList, XET_VERSION, blob_member, canonical_json, own_key, sha256_hex, sign_detached,
    snapshot_member, xet_file_member, xorb_member,
)
from mirror.bundles.xet import XetCarry, plan_carry
from mirror.errors import ObjectNotFoundError
from mirror.progress import NO_PROGRESS, CountingReader, Progress
from mirror.signing import Signer
from mirror.storage import layout
from mirror.storage.blobs import BlobStore
from registry import audit
from registry.errors import InvalidInputError, RepoNotFoundError
from registry.manifest import Manifest
from registry.models import MirrorRequest, Ref, Repo, Snapshot, SnapshotFile
from registry.types import RepoRef, RepoType

log = logging.getLogger(__name__)

_IN_CHUNK = 500  # SQL IN lists


@dataclass(frozen=True)
class Watermark:
    """What earlier exports carried: every snapshot, so every blob of them."""

    snapshots: frozenset[SnapshotKey] = frozenset()
    index_sha256: str | None = None  # the index this watermark comes from
    xorbs: frozenset[str] = frozenset()  # every xorb earlier exports carried

    @classmethod
    def of(cls, index: Index, index_bytes: bytes) -> "Watermark":
        return cls(frozenset(index.watermark), sha256_hex(index_bytes), frozenset(index.xorbs))


@dataclass(frozen=True)
class ExportResult:
    form: str  # dir | tar | volumes
    paths: list[Path]  # what was written: the folder, or the tar / volumes and their side files
    index_sha256: str
    key_id: str
    snapshots: list[SnapshotKey]
    blobs: int
    blob_bytes: int
    size: int  # bytes written in all
    xet_files: int  # blobs carried as a Xet record instead of their bytes
    xorbs: int  # xorbs carried (new since the watermark)
    xorb_bytes: int
    watermark: Watermark  # pass it (or the bundle's path) as ``since`` to the next export


@dataclass
class _Plan:
    snapshots: list[SnapshotKey] = field(default_factory=list)
    small: list[tuple[str, bytes]] = field(default_factory=list)  # (member path, bytes), in order
    blobs: dict[str, int] = field(default_factory=dict)  # sha256 -> size, insertion order = stream order
    refs: list[RefEntry] = field(default_factory=list)
    xet: XetCarry = field(default_factory=XetCarry)


def read_watermark(path: Path, trusted: PublicKeys) -> Watermark:
    """The watermark of an earlier bundle (any form) or of its kept index file. Raises BundleError."""
    index, data = read_index(path, trusted)
    return Watermark.of(index, data)


def export_bundle(
    engine: Engine,
    store: BlobStore,
    signer: Signer,
    out: Path,
    *,
    repos: Sequence[RepoRef] | None = None,
    since: Watermark | Path | str | None = None,
    form: Literal["dir", "tar"] = "dir",
    volume_size: int | None = None,
    instance: str = "hubgate",
    xet: bool = True,
    progress: Progress = NO_PROGRESS,
) -> ExportResult:
    """Write the published snapshots of ``repos`` (all repos when None) that ``since`` did not carry to ``out``.

    ``form="dir"``: ``out`` is a new (or empty) folder. ``form="tar"``: ``out`` is the tar file;
    with ``volume_size`` it is split into ``out.000``, ``out.001``, … plus the signed volume list
    ``out.volumes.json``. ``since`` is an earlier export's watermark or the path of that bundle (or
    of its kept index file), verified against this signer's key.

    Raises InvalidInputError on bad arguments, RepoNotFoundError for a repo with nothing published,
    BundleError when ``out`` exists, when ``since`` is not a valid bundle of this key, or when the
    store holds a manifest or blob that does not match its digest. A failed export removes what it wrote.
    """
    if form not in ("dir", "tar"):
        raise InvalidInputError(f"Invalid bundle form {form!r}: expected 'dir' or 'tar'")
    if volume_size is not None and (form != "tar" or volume_size < MIN_VOLUME_SIZE):
        raise InvalidInputError(f"Volumes need the tar form and a volume size of at least {MIN_VOLUME_SIZE} bytes")
    if isinstance(since, (str, os.PathLike)):
        previous = read_watermark(Path(since), own_key(signer))
    else:
        previous = since or Watermark()
    plan = _plan(engine, store, signer, repos, previous)
    if xet:
        plan.xet = plan_carry(store, plan.blobs, previous.xorbs)
        plan.blobs = {sha: size for sha, size in plan.blobs.items() if sha not in plan.xet.records}
    created = datetime.now(timezone.utc)
    members = [MemberEntry(path=p, size=len(d), sha256=sha256_hex(d)) for p, d in plan.small]
    members += [MemberEntry(path=xet_file_member(sha), size=len(d), sha256=sha256_hex(d))
                for sha, d in plan.xet.records.items()]
    members += [MemberEntry(path=xorb_member(x), size=size, sha256=digest) for x, (size, digest) in plan.xet.xorbs.items()]
    members += [MemberEntry(path=blob_member(sha), size=size, sha256=sha) for sha, size in plan.blobs.items()]
    watermark = previous.snapshots | set(plan.snapshots)
    xorbs = previous.xorbs | set(plan.xet.xorbs) if xet else frozenset()  # without Xet: a version 1 bundle
    index = Index(
        instance=instance, key_id=signer.key_id, created_at=created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        since=previous.index_sha256, snapshots=tuple(plan.snapshots), refs=tuple(plan.refs),
        watermark=tuple(sorted(watermark, key=_sort_key)), members=tuple(members),
        **({"version": XET_VERSION, "xorbs": tuple(sorted(xorbs))} if xorbs else {}),
    )
    index_bytes = index.to_bytes()
    index_sig = sign_detached(signer, INDEX_PAYLOAD_TYPE, index_bytes)
    writer: DirWriter | TarWriter = (
        DirWriter(out) if form == "dir" else TarWriter(out, volume_size, mtime=int(created.timestamp()))
    )
    try:
        records = [(xet_file_member(sha), d) for sha, d in plan.xet.records.items()]
        for path, data in [(INDEX_NAME, index_bytes), (INDEX_SIG_NAME, index_sig), *plan.small, *records]:
            writer.add(path, len(data), io.BytesIO(data))
        progress.begin("writing blobs", total_bytes=sum(plan.blobs.values()) + plan.xet.xorb_bytes,
                       total_files=len(plan.blobs) + len(plan.xet.xorbs))
        with ThreadPoolExecutor(1, thread_name_prefix="export-hash") as pool:
            for x, (size, digest) in plan.xet.xorbs.items():
                with store.driver.open(layout.xorb_key(x)) as f:
                    reader = _VerifyingReader(CountingReader(f, progress), digest, size, pool,  # type: ignore[arg-type]
                                              what=f"xorb {x}", fix="run `hubgate xet verify`")
                    writer.add(xorb_member(x), size, reader)
                    reader.check()
                progress.advance(files=1)
            for sha, size in plan.blobs.items():
                with store.open(sha) as f:
                    reader = _VerifyingReader(CountingReader(f, progress), sha, size, pool)  # type: ignore[arg-type]
                    writer.add(blob_member(sha), size, reader)
                    reader.check()
                progress.advance(files=1)
        paths, size, kind = _finish(writer, signer, index_bytes, index_sig, volume_size)
    except BaseException:
        writer.abort()
        raise
    finally:
        progress.end()
    log.info("exported %d snapshots, %d blobs (%d bytes), %d files as Xet with %d new xorbs (%d bytes) to %s",
             len(plan.snapshots), len(plan.blobs), sum(plan.blobs.values()), len(plan.xet.records),
             len(plan.xet.xorbs), plan.xet.xorb_bytes, out)
    return ExportResult(
        form=kind, paths=paths, index_sha256=sha256_hex(index_bytes), key_id=signer.key_id,
        snapshots=list(plan.snapshots), blobs=len(plan.blobs), blob_bytes=sum(plan.blobs.values()), size=size,
        xet_files=len(plan.xet.records), xorbs=len(plan.xet.xorbs), xorb_bytes=plan.xet.xorb_bytes,
        watermark=Watermark(frozenset(watermark), sha256_hex(index_bytes), frozenset(xorbs)),
    )


def _finish(writer: DirWriter | TarWriter, signer: Signer, index_bytes: bytes, index_sig: bytes,
            volume_size: int | None) -> tuple[list[Path], int, str]:
    if isinstance(writer, DirWriter):
        return [writer.root], writer.size, "dir"
    volumes = writer.finish()
    out = writer.out
    side: list[tuple[Path, bytes]] = [(out.with_name(out.name + SIDECAR_SUFFIX), index_bytes)]
    side.append((out.with_name(out.name + SIDECAR_SUFFIX + SIG_SUFFIX), index_sig))
    if volume_size is not None:
        vlist = VolumeList(bundle=out.name, key_id=signer.key_id, index_sha256=sha256_hex(index_bytes),
                           volume_size=volume_size, volumes=tuple(volumes)).to_bytes()
        list_path = out.with_name(out.name + VOLUMES_SUFFIX)
        side += [(list_path, vlist),
                 (list_path.with_name(list_path.name + SIG_SUFFIX), sign_detached(signer, VOLUMES_PAYLOAD_TYPE, vlist))]
    for path, data in side:
        with open(path, "xb") as f:
            f.write(data)
        writer.volumes.created.append(path)
    return list(writer.volumes.created), writer.size, "tar" if volume_size is None else "volumes"


class _VerifyingReader:
    """Hashes what is read from a stored blob; ``check`` raises if it was not the expected content.

    Each chunk is hashed on ``pool``'s thread while the caller writes it out (hashlib releases the GIL).
    """

    def __init__(self, f: BinaryIO, sha256: str, size: int, pool: ThreadPoolExecutor, *, what: str = "",
                 fix: str = "run a scrub") -> None:
        self._f, self._sha256, self._size, self._pool = f, sha256, size, pool
        self._what, self._fix = what or f"blob {sha256}", fix
        self._hash, self._got = hashlib.sha256(), 0
        self._pending: Future[None] | None = None

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        if self._pending is not None:
            self._pending.result()
        self._pending = self._pool.submit(self._hash.update, data)
        self._got += len(data)
        return data

    def check(self) -> None:
        if self._pending is not None:
            self._pending.result()
        if self._got != self._size or self._hash.hexdigest() != self._sha256:
            raise BundleError(f"Stored {self._what} is damaged or changed (size or sha256 differs); {self._fix}")


def _sort_key(k: SnapshotKey) -> tuple[str, str, str]:
    return k.repo_type.value, k.repo_id, k.commit


# -- planning --------------------------------------------------------------------------------------


def _plan(engine: Engine, store: BlobStore, signer: Signer, repos: Sequence[RepoRef] | None,
          previous: Watermark) -> _Plan:
    plan = _Plan()
    with Session(engine) as session:
        rows = _published(session, repos)
        done = {k.commit_key for k in previous.snapshots}
        new = [(s, r) for s, r in rows if (RepoType(r.repo_type), r.repo_id, s.commit) not in done]
        carried = _carried_blobs(session, store, previous.snapshots)
        approvals = {s.pk: _approval(session, s, r) for s, r in new}
        exported = {(RepoType(r.repo_type), r.repo_id, s.commit) for s, r in new} | done
        plan.refs = _refs(session, {r.pk: r for _, r in rows}, exported)
    for snap, repo_row in new:
        repo = RepoRef(RepoType(repo_row.repo_type), repo_row.repo_id)
        manifest_bytes, manifest = _stored_manifest(store, repo, snap)
        key = SnapshotKey(repo_type=repo.type, repo_id=repo.id, commit=snap.commit, manifest_sha256=snap.manifest_digest)
        try:
            signature = store.get_signature(repo, snap.commit)
        except ObjectNotFoundError:  # published before signing existed: the exporter vouches for it now
            signature = signer.sign(manifest)
            approvals[snap.pk]["signed_at_export"] = True
        plan.snapshots.append(key)
        plan.small += [
            (snapshot_member(key.manifest_sha256, MANIFEST), manifest_bytes),
            (snapshot_member(key.manifest_sha256, SIGNATURE), signature),
            (snapshot_member(key.manifest_sha256, APPROVAL), canonical_json(approvals[snap.pk])),
        ]
        for f in manifest.files:
            if f.sha256 not in carried:
                plan.blobs.setdefault(f.sha256, f.size)
    return plan


def _published(session: Session, repos: Sequence[RepoRef] | None) -> list[tuple[Snapshot, Repo]]:
    query = select(Snapshot, Repo).join(Repo, col(Repo.pk) == col(Snapshot.repo_pk)).where(Snapshot.state == "available")
    if repos is not None:
        if not repos:
            raise InvalidInputError("No repos to export")
        query = query.where(or_(*(and_(col(Repo.repo_type) == r.type.value, col(Repo.repo_id) == r.id) for r in repos)))
    rows = list(session.exec(
        query.order_by(col(Repo.repo_type), col(Repo.repo_id), col(Snapshot.created_at), col(Snapshot.pk))
    ).all())
    found = {(r.repo_type, r.repo_id) for _, r in rows}
    for r in repos or ():
        if (r.type.value, r.id) not in found:
            raise RepoNotFoundError(f"Repository {r.id} has nothing published to export")
    return rows


def _stored_manifest(store: BlobStore, repo: RepoRef, snap: Snapshot) -> tuple[bytes, Manifest]:
    try:
        data = store.driver.get_bytes(layout.manifest_key(repo, snap.commit))
    except ObjectNotFoundError as exc:
        raise BundleError(f"The manifest of {repo}@{snap.commit} is missing from the store") from exc
    manifest = Manifest.from_json(data)
    if sha256_hex(data) != snap.manifest_digest or manifest.digest() != snap.manifest_digest:
        raise BundleError(f"The stored manifest of {repo}@{snap.commit} does not match its published digest")
    return data, manifest


def _carried_blobs(session: Session, store: BlobStore, snapshots: frozenset[SnapshotKey]) -> set[str]:
    """Every blob of the snapshots earlier bundles carried (DB first; the stored manifest if unpublished since)."""
    by_repo: dict[tuple[RepoType, str], list[SnapshotKey]] = defaultdict(list)
    for k in snapshots:
        by_repo[(k.repo_type, k.repo_id)].append(k)
    blobs: set[str] = set()
    for (rtype, rid), keys in by_repo.items():
        repo_row = session.exec(select(Repo).where(Repo.repo_type == rtype.value, Repo.repo_id == rid)).first()
        found: set[str] = set()
        commits = [k.commit for k in keys]
        if repo_row is not None:
            for i in range(0, len(commits), _IN_CHUNK):
                rows = session.exec(
                    select(Snapshot.commit, SnapshotFile.sha256)
                    .join(SnapshotFile, col(SnapshotFile.snapshot_pk) == col(Snapshot.pk))
                    .where(Snapshot.repo_pk == repo_row.pk, col(Snapshot.commit).in_(commits[i:i + _IN_CHUNK]))
                ).all()
                found |= {c for c, _ in rows}
                blobs |= {sha for _, sha in rows}
        for k in keys:
            if k.commit not in found:
                try:
                    blobs |= {f.sha256 for f in store.get_manifest(RepoRef(rtype, rid), k.commit).files}
                except ObjectNotFoundError:
                    log.warning("%s is in the watermark but gone: its blobs will be exported again", k)
    return blobs


def _refs(session: Session, repos: dict[int | None, Repo], exported: set[tuple[RepoType, str, str]]) -> list[RefEntry]:
    refs = []
    rows = session.exec(select(Ref).where(col(Ref.repo_pk).in_([pk for pk in repos if pk is not None]))).all()
    for ref in sorted(rows, key=lambda r: (r.repo_pk, r.name)):
        repo = repos[ref.repo_pk]
        if (RepoType(repo.repo_type), repo.repo_id, ref.commit) in exported:
            refs.append(RefEntry(repo_type=RepoType(repo.repo_type), repo_id=repo.repo_id, name=ref.name,
                                 kind=ref.kind, commit=ref.commit))
    return refs


def _approval(session: Session, snap: Snapshot, repo_row: Repo) -> dict[str, Any]:
    """Who approved the snapshot and when, the policy findings, and its provenance."""
    provenance = dict(snap.provenance or {})
    req = session.get(MirrorRequest, provenance["request"]) if isinstance(provenance.get("request"), int) else None
    if req is None:
        req = session.exec(
            select(MirrorRequest).where(
                MirrorRequest.repo_type == repo_row.repo_type, MirrorRequest.repo_id == repo_row.repo_id,
                MirrorRequest.commit == snap.commit, MirrorRequest.state == "available",
            ).order_by(col(MirrorRequest.pk).desc())
        ).first()
    record: dict[str, Any] = {
        "repo_type": repo_row.repo_type, "repo_id": repo_row.repo_id, "commit": snap.commit,
        "manifest_sha256": snap.manifest_digest, "provenance": provenance, "request": None,
    }
    if req is not None:
        # updated_at moves with every transition and progress report: the audit log has the approval time.
        events = audit.query(session, action="request.approve", target=f"request:{req.pk}", limit=1)
        record["request"] = {
            "id": req.pk, "revision": req.revision, "requested_by": req.requester, "reason": req.reason,
            "verdict": req.verdict, "findings": req.findings, "approved_by": req.decided_by,
            "decision_reason": req.decision_reason, "approved_at": _iso(events[0].at if events else req.updated_at),
        }
    return record


def _iso(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
