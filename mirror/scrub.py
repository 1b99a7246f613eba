"""``hubgate verify``: re-hash stored blobs, quarantine the corrupt, mark the snapshots that use them unavailable.

Clients then get a clear 503 for those snapshots, never wrong bytes. ``repair`` re-fetches the
blobs from the upstream (a bundle import repairs too) and makes the snapshots available again.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine
from sqlmodel import Session

from mirror.progress import NO_PROGRESS, Progress
from mirror.telemetry import SCRUB_BLOBS, TELEMETRY
from mirror.scan.gate import Gate
from mirror.errors import ObjectNotFoundError
from mirror.storage import layout
from mirror.storage.blobs import BlobStore
from registry import audit, snapshots
from registry.db import session_scope

if TYPE_CHECKING:
    from mirror.sync import Syncer

log = logging.getLogger(__name__)
_CHUNK = 8 * 1024 * 1024


@dataclass
class ScrubReport:
    checked: int = 0
    bytes_checked: int = 0
    corrupt: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    snapshots_unavailable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.missing


class _Throttle:
    def __init__(self, bytes_per_second: float | None) -> None:
        self._rate, self._start, self._done = bytes_per_second, time.monotonic(), 0

    def consumed(self, n: int) -> None:
        if not self._rate:
            return
        self._done += n
        ahead = self._done / self._rate - (time.monotonic() - self._start)
        if ahead > 0:
            time.sleep(ahead)


def _hash_blob(store: BlobStore, sha256: str, throttle: _Throttle,
               progress: Progress = NO_PROGRESS) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    with store.open(sha256) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
            throttle.consumed(len(chunk))
            progress.advance(len(chunk))
    return size, h.hexdigest()


def scrub(
    engine: Engine, store: BlobStore, *, sample: float | None = None, bytes_per_second: float | None = None,
    dry_run: bool = False, actor: audit.Actor = audit.SYSTEM, progress: Progress = NO_PROGRESS,
) -> ScrubReport:
    """Check every referenced blob (or a random ``sample`` fraction) for presence, size and sha256."""
    with Session(engine) as session:
        expected = snapshots.referenced_blobs(session)
    digests = sorted(expected)
    if sample is not None and sample < 1:
        digests = sorted(random.sample(digests, max(1, round(len(digests) * sample)) if digests else 0))
    report, throttle = ScrubReport(), _Throttle(bytes_per_second)
    progress.begin("verifying", total_bytes=sum(expected[d] for d in digests), total_files=len(digests))
    for sha in digests:
        try:
            size, actual = _hash_blob(store, sha, throttle, progress)
        except ObjectNotFoundError:
            report.missing.append(sha)
            TELEMETRY.add(SCRUB_BLOBS, label="missing")
            continue
        finally:
            progress.advance(files=1)
        report.checked += 1
        report.bytes_checked += size
        if actual != sha or size != expected[sha]:
            log.error("blob %s is corrupt (%d bytes, sha256 %s)", sha, size, actual)
            report.corrupt.append(sha)
        TELEMETRY.add(SCRUB_BLOBS, label="corrupt" if sha in report.corrupt[-1:] else "ok")
    progress.end()
    bad = set(report.corrupt) | set(report.missing)
    if not dry_run:
        if bad:
            for sha in report.corrupt:
                store.driver.move(layout.blob_key(sha), layout.quarantine_key(sha))
        # recorded clean or not: the last scrub's time and findings are what /metrics shows (registry/stats.py)
        with session_scope(engine) as session:
            if bad:
                report.snapshots_unavailable = snapshots.set_state_for_blobs(session, bad, "unavailable", actor=actor)
            audit.record(session, actor, "scrub", "store", checked=report.checked, corrupt=report.corrupt[:100],
                         missing=report.missing[:100])
    return report


def restore_available(engine: Engine, store: BlobStore, *, actor: audit.Actor = audit.SYSTEM,
                      gate: Gate | None = None) -> list[str]:
    """Mark unavailable snapshots available again once every blob they use is back in the store and
    the content scan passes on them again (a snapshot it blocks becomes ``blocked``)."""
    from mirror.scan.rescan import recheck

    restored = []
    with Session(engine) as session:
        candidates = snapshots.unavailable_snapshots(session)
    for repo, commit in candidates:
        manifest = store.get_manifest(repo, commit)
        if all(store.has(f.sha256) for f in manifest.files):
            # the info (what a missing README/config hid) is refreshed by recheck
            if not recheck(engine, store, gate or Gate(store), repo, commit, actor=actor).blocked:
                restored.append(f"{repo}@{commit}")
    return restored


def repair_from_upstream(engine: Engine, store: BlobStore, syncer: Syncer, *, gate: Gate | None = None) -> list[str]:
    """Re-fetch (verified) every blob an unavailable snapshot lacks, then make it available again."""
    from mirror.sync import Progress
    from mirror.upstream import UpstreamFile

    with Session(engine) as session:
        candidates = snapshots.unavailable_snapshots(session)
    if candidates:
        syncer.connect()
    for repo, commit in candidates:
        manifest = store.get_manifest(repo, commit)
        for f in manifest.files:
            if store.has(f.sha256):
                continue
            log.info("repair: re-fetching %s of %s@%s", f.path, repo, commit)
            oid = f.tree_oid
            syncer.fetch(repo, commit, UpstreamFile(f.path, f.size, oid, f.sha256 if f.lfs else None), Progress(1, f.size))
    return restore_available(engine, store, gate=gate)
