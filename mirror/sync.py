"""Sync one approved request: plan -> fetch (verify while streaming) -> publish, as short named steps.

Nothing of the revision is visible until ``publish`` commits the manifest, its refs and the
request's ``available`` state in one transaction. Blobs already stored are never fetched
again, so a sync that a dead worker left half-done resumes where it was.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session

from mirror.digests import Digests
from mirror.fetchpool import NO_RETRY, ChunkResult, FetchPool, stream_into
from mirror.telemetry import SYNC_BYTES, SYNC_FILES, TELEMETRY
from mirror.publishing import publish_manifest
from mirror.xet.builder import XetBuilder
from mirror.scan import check_tree
from mirror.scan.gate import Decisions, Gate, Prescan, decide
from mirror.signing import Signer
from mirror.storage.blobs import BlobBatch, BlobStore, BlobWriter
from mirror.upstream import HubUpstream, UpstreamError, UpstreamFile
from registry import access, knownblobs, policy, workflow
from registry.db import session_scope
from registry.errors import ContentBlockedError
from registry.manifest import Manifest, ManifestEntry
from registry.refs import RefName, parse_ref
from registry.types import RepoRef, is_commit_sha

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class SyncOptions:
    file_workers: int = 8
    range_workers: int = 4
    part_size: int = 16 * 1024 * 1024
    parallel_threshold: int = 64 * 1024 * 1024
    resume_attempts: int = 5
    # How often fetched blobs are made durable, recorded (KnownBlob rows, progress) and handed to the content
    # scan: at most this much work is lost to a crash, and this much waits for the scan after the last file.
    progress_interval: float = 0.1
    # How often the progress alone (bytes of files still downloading) is written when no file was stored.
    report_interval: float = 1.0
    # With a FetchPool, files below parallel_threshold go to its child processes in chunks of this many, when
    # a sync has at least pool_min_files of them (fewer are not worth the pipe).
    pool_chunk: int = 64
    pool_min_files: int = 64


@dataclass(frozen=True)
class PlannedFile:
    upstream: UpstreamFile
    known: knownblobs.Blob | None  # already stored: nothing to fetch


class Progress:
    def __init__(self, files_total: int, bytes_total: int) -> None:
        self.files_total, self.bytes_total = files_total, bytes_total
        self.files_done = self.bytes_done = 0
        self._lock = threading.Lock()

    def add(self, nbytes: int = 0, files: int = 0) -> None:
        with self._lock:
            self.bytes_done += nbytes
            self.files_done += files

    def fetched(self, nbytes: int = 0, files: int = 0) -> None:
        """Bytes downloaded from the upstream as they arrive, and files once verified and durably stored (not
        those that were stored already): progress and /metrics."""
        self.add(nbytes, files)
        if nbytes:
            TELEMETRY.add(SYNC_BYTES, nbytes)
        if files:
            TELEMETRY.add(SYNC_FILES, files)


class Syncer:
    def __init__(
        self, engine: Engine, store: BlobStore, upstream: HubUpstream | Callable[[], HubUpstream],
        options: SyncOptions | None = None, *, signer: Signer | None = None, instance: str = "hubgate",
        gate: Gate | None = None, xet: XetBuilder | None = None, fetch_pool: FetchPool | None = None,
    ) -> None:
        """``upstream`` may be a factory, asked again at the start of every job (a new token takes effect).
        ``fetch_pool``: child processes for many small files (mirror/fetchpool.py); without it, threads only."""
        self.engine, self.store = engine, store
        self._upstream_factory = upstream if callable(upstream) and not isinstance(upstream, HubUpstream) else None
        # With a factory the client is asked for per job: a sealed side (no upstream) still starts its worker.
        self.upstream: HubUpstream = upstream if isinstance(upstream, HubUpstream) else None  # type: ignore[assignment]
        self.options = options or SyncOptions()
        self.signer, self.instance = signer, instance
        self.gate = gate or Gate(store, signer=signer)
        self.xet = xet  # HUBGATE_XET=on: builds the Xet form of large files once published
        self.fetch_pool = fetch_pool

    def connect(self) -> HubUpstream:
        """The upstream client for the next job; a factory is asked again (a new token takes effect).

        Raises UpstreamError when no upstream is configured (a sealed side)."""
        if self._upstream_factory is not None:
            self.upstream = self._upstream_factory()
        return self.upstream

    # step 1
    def plan(self, repo: RepoRef, commit: str, allow: list[str] | None, ignore: list[str] | None) -> list[PlannedFile]:
        """The files to publish, each marked with the stored blob that already holds it, if any."""
        listing = {f.path: f for f in self.upstream.list_files(repo, commit)}
        refused = check_tree(listing)  # the whole tree, chosen files or not: refused before a byte is fetched
        if refused:
            result = decide([], refused, Decisions(), set())
            raise ContentBlockedError(result.message(f"{repo}@{commit}"), result.record())
        chosen = [listing[p] for p in policy.select_files(sorted(listing), allow, ignore)]
        with Session(self.engine) as session:  # one lookup for all the files, not one per file
            by_sha, by_oid = knownblobs.lookup(session, sha256s=[f.lfs_sha256 for f in chosen if f.lfs_sha256],
                                               git_oids=[f.oid for f in chosen if not f.lfs_sha256])
        return [PlannedFile(f, self._known(f, by_sha, by_oid)) for f in chosen]

    def _known(self, f: UpstreamFile, by_sha: dict[str, knownblobs.Blob],
               by_oid: dict[str, knownblobs.Blob]) -> knownblobs.Blob | None:
        row = by_sha.get(f.lfs_sha256) if f.lfs_sha256 else by_oid.get(f.oid)
        if row is not None and row.size == f.size and self.store.has(row.sha256):
            return row
        return None

    # step 2
    def fetch(self, repo: RepoRef, commit: str, f: UpstreamFile, progress: Progress,
              batch: BlobBatch | None = None) -> Digests:
        """Download and store one file, verified against the upstream's size and sha256 / git blob id.

        With ``batch`` the blob is in the store only after the batch's next flush."""
        expect_sha = f.lfs_sha256
        expect_oid = None if f.lfs_sha256 else f.oid
        with self.store.ingest(size=f.size, sha256=expect_sha, git_oid=expect_oid, what=f.path, batch=batch) as w:
            if f.size >= self.options.parallel_threshold:
                self._fetch_ranges(repo, commit, f, w, progress)
            else:
                self._fetch_stream(repo, commit, f, w, progress)
            return w.commit()

    def _fetch_stream(self, repo: RepoRef, commit: str, f: UpstreamFile, w: BlobWriter, progress: Progress) -> None:
        stream_into(self.upstream, repo, commit, f, w, progress.fetched, self.options.resume_attempts)

    def _fetch_part(self, repo: RepoRef, commit: str, path: str, start: int, end: int, buffer: bytearray) -> memoryview:
        """Bytes [start, end] of ``path`` into ``buffer`` (reused from part to part: a fresh 16 MiB object per
        part costs page faults, on the project's VM more than copying into warm memory); returns the view."""
        want, view = end - start + 1, memoryview(buffer)
        for attempt in range(self.options.resume_attempts + 1):
            got = 0
            try:
                with self.upstream.open(repo, commit, path, start=start, end=end, chunk_size=None) as chunks:
                    for chunk in chunks:  # as the network gives them: no re-chunking copy
                        if got + len(chunk) > want:
                            raise UpstreamError(f"{path}: part {start}-{end} came back with more than {want} bytes")
                        view[got:got + len(chunk)] = chunk
                        got += len(chunk)
                if got != want:
                    raise UpstreamError(f"{path}: part {start}-{end} came back with {got} bytes")
                return view[:want]
            except (httpx.TransportError, UpstreamError) as exc:
                if isinstance(exc, NO_RETRY) or attempt == self.options.resume_attempts:
                    raise
                time.sleep(min(2**attempt * 0.2, 5))
        raise AssertionError("unreachable")

    def _fetch_ranges(self, repo: RepoRef, commit: str, f: UpstreamFile, w: BlobWriter, progress: Progress) -> None:
        """Parallel range requests, hashed and written strictly in order (memory: a window of 2 x range_workers
        parts, each in a buffer that the next part reuses once its bytes are stored)."""
        part, n = self.options.part_size, self.options.range_workers
        bounds = [(s, min(s + part, f.size) - 1) for s in range(0, f.size, part)]
        with ThreadPoolExecutor(n, thread_name_prefix="range") as pool:
            pending: deque[tuple[Future[memoryview], bytearray]] = deque()

            def submit(s: int, e: int, buffer: bytearray) -> None:
                pending.append((pool.submit(self._fetch_part, repo, commit, f.path, s, e, buffer), buffer))

            queue = iter(bounds)
            for s, e in itertools.islice(queue, 2 * n):
                submit(s, e, bytearray(min(part, f.size)))
            try:
                while pending:
                    fut, buffer = pending.popleft()
                    data = fut.result()
                    w.write(data)
                    progress.fetched(len(data))
                    nxt = next(queue, None)
                    if nxt is not None:  # this part is stored: its buffer takes the next one
                        submit(*nxt, buffer)
            finally:
                for fut, _ in pending:
                    fut.cancel()

    # the whole job
    def run(self, request_pk: int) -> Manifest:
        """Sync a request end to end. Raises on any failure, with nothing published."""
        self.connect()
        with session_scope(self.engine) as session:
            req = workflow.start(session, request_pk)
            repo, commit, revision = RepoRef.parse(req.repo_type, req.repo_id), req.commit, req.revision
            allow, ignore = req.allow_patterns, req.ignore_patterns
            provenance = {"instance": self.instance, "request": request_pk, "approved_by": req.decided_by,
                          "requested_by": req.requester, "upstream": self.upstream.base_url, "revision": revision}
        log.info("sync %s@%s: planning (listing the upstream tree)", repo, commit)  # the request shows "planning"
        planned = self.plan(repo, commit, allow, ignore)
        progress = Progress(len(planned), sum(p.upstream.size for p in planned))
        entries: dict[str, ManifestEntry] = {}
        for p in planned:
            if p.known is not None:
                entries[p.upstream.path] = ManifestEntry(path=p.upstream.path, size=p.known.size, sha256=p.known.sha256,
                                                         git_oid=p.known.git_oid, lfs=p.upstream.lfs_sha256 is not None)
                progress.add(p.upstream.size, 1)
        todo = [p.upstream for p in planned if p.known is None]
        log.info("sync %s@%s: %d files, %d to fetch", repo, commit, len(planned), len(todo))
        self._report(request_pk, progress)
        # The content scan takes each file as soon as it is stored, while the others download.
        prescan = Prescan(self.gate, {p.upstream.path: p.upstream.size for p in planned})
        for e in entries.values():
            prescan.add(e.path, e.sha256, e.size)
        try:
            self._fetch_all(repo, commit, todo, request_pk, progress, entries, prescan)
        except BaseException:
            prescan.cancel()
            raise
        gate = prescan.finish()
        manifest = Manifest(
            repo_type=repo.type, repo_id=repo.id, commit=commit,
            created_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            source={"kind": "upstream", "endpoint": self.upstream.base_url, "revision": revision},
            files=tuple(entries[p] for p in sorted(entries)),
        )
        refs = [] if is_commit_sha(revision) else [self._ref(repo, revision)]
        published = publish_manifest(self.engine, self.store, manifest, refs, default_main=True, signer=self.signer,
                                     provenance=provenance, gate=gate, xet=self.xet,
                                     in_transaction=lambda s: (workflow.finish(s, request_pk),
                                                               access.gate_request(s, request_pk)))
        if published.scan is not None:
            with session_scope(self.engine) as session:
                workflow.record_scan(session, request_pk, published.scan)
        return manifest

    def _fetch_all(self, repo: RepoRef, commit: str, todo: list[UpstreamFile], request_pk: int, progress: Progress,
                   entries: dict[str, ManifestEntry], prescan: Prescan) -> None:
        """Fetch ``todo`` into ``entries``: with ``file_workers`` threads here, or many small files in the fetch
        pool's child processes (``_split``), whose blobs this batch adopts.

        Blobs are committed in batches (mirror/storage/blobs.py BlobBatch): every progress interval
        (and at the end, and on a failure) the batch is flushed, which makes its blobs durable and
        visible, and only then are they recorded as KnownBlob rows, in the same transaction as the
        progress, and handed to ``prescan``. A crash loses at most the blobs fetched since the last
        flush; none that has a row or is counted in the progress's files.
        """
        flushed: list[ManifestEntry] = []  # verified and added to the batch, not recorded yet

        def flush() -> None:
            # Taken before the flush: if it fails, these are dropped, since nothing says their blobs are stored
            # (a later flush of the same batch must not record them either).
            done = flushed[:]
            flushed.clear()
            batch.flush()
            progress.fetched(files=len(done))  # files count once durable; bytes as they arrive
            self._report(request_pk, progress, known=[knownblobs.Blob(e.sha256, e.git_oid, e.size) for e in done])
            for e in done:
                prescan.add(e.path, e.sha256, e.size)

        def record(f: UpstreamFile, d: Digests) -> None:
            entries[f.path] = ManifestEntry(path=f.path, size=d.size, sha256=d.sha256, git_oid=d.git_oid,
                                            lfs=f.lfs_sha256 is not None)
            flushed.append(entries[f.path])

        def take(fut: Future) -> None:  # type: ignore[type-arg]
            """Record what a finished fetch verified (a file, or a child's chunk of files); raise its error."""
            what = futures[fut]
            if isinstance(what, UpstreamFile):
                record(what, fut.result())
                return
            chunk: ChunkResult = FetchPool.check(fut)
            batch.adopt(chunk.staged)
            progress.fetched(chunk.nbytes)
            by_path = {f.path: f for f in what}
            for path, d in chunk.done:
                record(by_path[path], d)
            if chunk.error is not None:
                raise chunk.error

        with self.store.batch() as batch, ThreadPoolExecutor(self.options.file_workers,
                                                             thread_name_prefix="fetch") as pool:
            futures: dict[Future, UpstreamFile | list[UpstreamFile]] = {}  # type: ignore[type-arg]
            here, chunks = self._split(todo)
            for f in here:
                futures[pool.submit(self.fetch, repo, commit, f, progress, batch)] = f
            for chunk in chunks:
                assert self.fetch_pool is not None
                futures[self.fetch_pool.submit(self.upstream.spec, repo, commit, chunk,
                                               self.options.resume_attempts)] = chunk
            remaining = set(futures)
            reported = time.monotonic()
            try:
                while remaining:
                    done, remaining = wait(remaining, timeout=self.options.progress_interval,
                                           return_when=FIRST_EXCEPTION)
                    for fut in done:
                        take(fut)
                    if flushed or not remaining or time.monotonic() - reported >= self.options.report_interval:
                        flush()
                        reported = time.monotonic()
            except BaseException:
                # Keep what was verified (a retry then skips it): the other fetches finish or fail first.
                for other in remaining:
                    other.cancel()
                wait(remaining)
                for fut in remaining:
                    if not fut.cancelled():
                        try:
                            take(fut)
                        except Exception:  # noqa: BLE001 - the first error is the one to report
                            pass
                try:
                    flush()
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    log.exception("sync %s@%s: could not keep the blobs fetched before the failure", repo, commit)
                raise

    def _split(self, todo: list[UpstreamFile]) -> tuple[list[UpstreamFile], list[list[UpstreamFile]]]:
        """The files fetched by threads here, and the chunks for the fetch pool's children: the files below the
        range threshold, when there are at least ``pool_min_files`` of them."""
        o = self.options
        small = [f for f in todo if f.size < o.parallel_threshold]
        if self.fetch_pool is None or len(small) < o.pool_min_files:
            return todo, []
        return ([f for f in todo if f.size >= o.parallel_threshold],
                [small[i:i + o.pool_chunk] for i in range(0, len(small), o.pool_chunk)])

    def _ref(self, repo: RepoRef, revision: str) -> RefName:
        """The ref to publish: a short name is a tag here when it is a tag upstream, else a branch."""
        ref = parse_ref(revision)
        if ref.kind == "branch" and not revision.startswith("refs/") and revision in self.upstream.tags(repo):
            return RefName(ref.name, "tag")
        return ref

    def _report(self, request_pk: int, p: Progress, known: list[knownblobs.Blob] | None = None) -> None:
        """Record the progress, and ``known`` (blobs just made durable) as KnownBlob rows, in one transaction."""
        with session_scope(self.engine) as session:
            if known:
                knownblobs.record(session, known)
            workflow.set_progress(session, request_pk, files_done=p.files_done, files_total=p.files_total,
                                  bytes_done=p.bytes_done, bytes_total=p.bytes_total)
