"""The last step shared by import, sync and bundle import: store the manifest, then publish it and move refs in one DB transaction."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mirror import repoinfo, scrub
from mirror.errors import BlobNotFoundError, ObjectNotFoundError
from mirror.scan.gate import Decisions, Gate, provenance_of
from mirror.signing import Signer
from mirror.storage.blobs import BlobStore
from mirror.xet.builder import XetBuilder
from registry import catalog, knownblobs, snapshots
from registry.db import named_lock, session_scope
from registry.errors import ConflictError, ContentBlockedError
from registry.manifest import Manifest
from registry.models import Ref, Repo, Snapshot
from registry.refs import RefName, parse_ref

log = logging.getLogger(__name__)


def publish_manifest(
    engine: Engine,
    store: BlobStore,
    manifest: Manifest,
    refs: Sequence[RefName] = (),
    *,
    default_main: bool = False,
    in_transaction: Callable[[Session], object] | None = None,
    signer: Signer | None = None,
    signature: bytes | None = None,
    provenance: dict[str, Any] | None = None,
    gate: Gate | None = None,
    decisions: Decisions = Decisions(),
    xet: XetBuilder | None = None,
) -> snapshots.PublishResult:
    """Make ``manifest`` visible. Every blob it names must already be stored and verified.

    The content gate runs first (``gate``, else one with the default limits: no path publishes
    unscanned), with ``decisions`` added to those recorded here (a bundle's overrides and code
    approvals). A blocked snapshot raises ContentBlockedError and nothing of it is written. The
    scan record becomes part of the snapshot's provenance (``result.scan``).

    ``default_main`` also points ``main`` at the commit when the repo has no ``main`` yet;
    ``in_transaction`` runs inside the publishing transaction (e.g. to mark a request available).
    The snapshot is signed by ``signer``, or keeps ``signature`` (a verified bundle from another instance).
    Raises BlobNotFoundError if a blob is missing, ConflictError if the commit is published
    with other content. Nothing becomes visible unless the whole transaction commits.

    ``xet`` (HUBGATE_XET=on) then builds the Xet representation of the large files (mirror/xet/builder.py).

    Publishes of one commit run one at a time (a lock in the database: two requests for the same
    revision synced by two workers, two replicas importing): the second finds the first's manifest
    and publishes it as it is, instead of writing a manifest of its own over it.
    """
    with named_lock(engine, f"publish {manifest.repo_type.value}/{manifest.repo_id}@{manifest.commit}"):
        result = _publish(engine, store, manifest, refs, default_main=default_main, in_transaction=in_transaction,
                          signer=signer, signature=signature, provenance=provenance, gate=gate, decisions=decisions)
    if xet is not None:  # HUBGATE_XET=on: large files get their Xet form (outside the lock; never fails the publish)
        try:
            xet.build_manifest(manifest)
        except Exception:  # noqa: BLE001 - the snapshot is published; its files are served plain until a backfill
            log.exception("published %s@%s, but building its Xet representation failed", manifest.repo, manifest.commit)
    return result


def _publish(
    engine: Engine, store: BlobStore, manifest: Manifest, refs: Sequence[RefName], *, default_main: bool,
    in_transaction: Callable[[Session], object] | None, signer: Signer | None, signature: bytes | None,
    provenance: dict[str, Any] | None, gate: Gate | None, decisions: Decisions,
) -> snapshots.PublishResult:
    missing = [f.path for f in manifest.files if not store.has(f.sha256)]
    if missing:
        raise BlobNotFoundError(f"Cannot publish {manifest.repo}@{manifest.commit}: blobs missing for {missing[:5]}")
    try:
        stored: Manifest | None = store.get_manifest(manifest.repo, manifest.commit)
    except ObjectNotFoundError:
        stored = None
    if stored is not None and stored.files != manifest.files:
        raise ConflictError(f"{manifest.repo} commit {manifest.commit} is already published with different content")
    state = _published_state(engine, manifest)
    if state == "blocked":
        raise ContentBlockedError(
            f"{manifest.repo}@{manifest.commit} is blocked by the content scan; `hubgate rescan` re-checks it",
            dict((_stored_provenance(store, manifest).get("scan") or {})),
        )
    scanned: dict[str, Any] | None = None
    gate = gate or Gate(store, signer=signer)
    if state != "available":  # an available snapshot was scanned when it was published (rescan re-checks)
        scanned = provenance_of(gate.enforce(engine, manifest, extra=decisions))
    written = stored is None
    if stored is not None:  # the same files again (another ref, a resumed sync): keep the first manifest,
        manifest = stored   # signature and provenance byte for byte
        provenance = _stored_provenance(store, manifest)
        if scanned is not None:  # scanned again (a repair, a resumed publish): the newest scan is the one that counts
            provenance |= scanned
            gate.put_provenance(manifest, provenance)
    else:
        store.put_manifest(manifest)
        provenance = dict(provenance or {}) | (scanned or {})
        if signature is None and signer is not None:
            signature = signer.sign(manifest)
            provenance.setdefault("key_id", signer.key_id)
        if signature is not None:
            store.put_signature(manifest.repo, manifest.commit, signature)
        gate.put_provenance(manifest, provenance)
    digest = manifest.digest()
    refs = list(refs)
    try:
        info = repoinfo.describe(store, manifest)
        result = _publish_in_db(engine, manifest, digest, info, refs, provenance, default_main, in_transaction)
        result.scan = (scanned or provenance).get("scan")
    except BaseException:
        # Nothing of a failed publish may stay where rebuild-index would find it, unless a concurrent
        # publish of the same commit (which wrote the same files) is the one that committed.
        if written and not _committed_elsewhere(engine, manifest):
            store.delete_snapshot(manifest.repo, manifest.commit)
        raise
    for ref in refs:  # a disaster-recovery copy; the DB is authoritative
        store.put_ref(manifest.repo, ref.full, manifest.commit)
    # Blobs just verified may be what other, unavailable snapshots were waiting for. Best effort:
    # this publish has committed, and must not be reported as failed because of another snapshot.
    try:
        scrub.restore_available(engine, store)
    except Exception:  # noqa: BLE001 - logged; the next publish tries again
        log.exception("published %s@%s, but restoring unavailable snapshots failed", manifest.repo, manifest.commit)
    log.info(
        "published %s@%s (%d files, %s)%s", manifest.repo, manifest.commit, len(manifest.files),
        "new" if result.created else "unchanged", f", refs moved: {result.refs_moved}" if result.refs_moved else "",
    )
    return result


def _published_state(engine: Engine, manifest: Manifest) -> str | None:
    """The state of the commit's snapshot here, or None when it is not published."""
    with Session(engine) as session:
        return session.exec(
            select(Snapshot.state).join(Repo).where(
                Repo.repo_type == manifest.repo_type.value, Repo.repo_id == manifest.repo_id,
                Snapshot.commit == manifest.commit)
        ).first()


def _stored_provenance(store: BlobStore, manifest: Manifest) -> dict[str, Any]:
    try:
        return dict(store.get_provenance(manifest.repo, manifest.commit))
    except ObjectNotFoundError:
        return {}


def _committed_elsewhere(engine: Engine, manifest: Manifest) -> bool:
    try:
        with Session(engine) as session:
            return any(s.commit == manifest.commit for s in catalog.list_snapshots(session, manifest.repo))
    except Exception:  # noqa: BLE001 - unknown (e.g. the DB is what failed): clean up as if not
        return False


def _publish_in_db(
    engine: Engine, manifest: Manifest, digest: str, info: dict[str, Any], refs: list[RefName],
    provenance: dict[str, Any], default_main: bool, in_transaction: Callable[[Session], object] | None,
) -> snapshots.PublishResult:
    with session_scope(engine) as session:
        if default_main and not any(r.name == "main" for r in refs):
            repo_row = snapshots.get_or_create_repo(session, manifest.repo, created_at=manifest.created_datetime)
            if session.get(Ref, (repo_row.pk, "main")) is None:
                refs.append(parse_ref("main"))
        result = snapshots.publish(session, manifest, manifest_digest=digest, info=info, refs=refs,
                                   provenance=provenance)
        knownblobs.record(session, (knownblobs.Blob(f.sha256, f.git_oid, f.size) for f in manifest.files))
        if in_transaction is not None:
            in_transaction(session)
    return result
