"""The last step shared by import, sync and bundle import: store the manifest, then publish it and move refs in one DB transaction."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.engine import Engine

from mirror import repoinfo
from mirror.errors import BlobNotFoundError
from mirror.storage.blobs import BlobStore
from registry import snapshots
from registry.db import session_scope
from registry.manifest import Manifest
from registry.refs import RefName

log = logging.getLogger(__name__)


def publish_manifest(
    engine: Engine, store: BlobStore, manifest: Manifest, refs: Sequence[RefName] = ()
) -> snapshots.PublishResult:
    """Make ``manifest`` visible. Every blob it names must already be stored and verified.

    Raises BlobNotFoundError if a blob is missing, ConflictError if the commit is published
    with other content. Nothing becomes visible unless the whole transaction commits.
    """
    missing = [f.path for f in manifest.files if not store.has(f.sha256)]
    if missing:
        raise BlobNotFoundError(f"Cannot publish {manifest.repo}@{manifest.commit}: blobs missing for {missing[:5]}")
    digest = store.put_manifest(manifest)
    info = repoinfo.describe(store, manifest)
    with session_scope(engine) as session:
        result = snapshots.publish(session, manifest, manifest_digest=digest, info=info, refs=refs)
    for ref in refs:  # a disaster-recovery copy; the DB is authoritative
        store.put_ref(manifest.repo, ref.name, manifest.commit)
    log.info(
        "published %s@%s (%d files, %s)%s", manifest.repo, manifest.commit, len(manifest.files),
        "new" if result.created else "unchanged", f", refs moved: {result.refs_moved}" if result.refs_moved else "",
    )
    return result
