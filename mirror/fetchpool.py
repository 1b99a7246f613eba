"""The small files of a sync, fetched in child processes: many files per second are bound by Python's
per-file work (the HTTP request, hashing, the temp file), which one process does on one core at a time.

``FetchPool.submit`` hands a child a chunk of files. The child downloads them with a few threads, each
verified against its size and sha256 / git blob id while it streams, into the same store as the parent:

* on a local store each blob stays a temp file in the store's ``.tmp/`` until the parent's batch
  (mirror/storage/blobs.py ``BlobBatch``) adopts it and flushes it: the same durability as a blob
  fetched in the parent (nothing is recorded before the flush that makes it visible);
* on S3 each blob is committed by the child (an S3 commit is durable on return).

The answer (``ChunkResult``) carries only names and digests; no file byte crosses the pipe. The children
start once per process with the "spawn" method (the parent has threads) and serve every later sync;
each builds its own store and upstream client from plain settings (``StorageSettings``,
``UpstreamSpec``: the same egress rules, token and timeouts) and leaves when its parent is gone.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool, ProcessPoolExecutor
from dataclasses import dataclass, field

import httpx

from mirror.digests import Digests
from mirror.settings import StorageSettings
from mirror.storage.blobs import BlobStore, BlobWriter
from mirror.telemetry import TELEMETRY
from mirror.upstream import (
    HubUpstream,
    UpstreamError,
    UpstreamFile,
    UpstreamGatedError,
    UpstreamNotFoundError,
    UpstreamRefusedError,
    UpstreamSpec,
)
from registry.types import RepoRef

log = logging.getLogger(__name__)

# Answers that another try cannot change: not found, gated, or refused by the egress rules (a redirect
# off the allowlist, another commit than the one being synced).
NO_RETRY = (UpstreamNotFoundError, UpstreamGatedError, UpstreamRefusedError)


def stream_into(upstream: HubUpstream, repo: RepoRef, commit: str, f: UpstreamFile, w: BlobWriter,
                on_bytes: Callable[[int], None], resume_attempts: int) -> None:
    """Download ``f`` in one request into ``w``, resuming with a Range request after a broken stream
    (``resume_attempts`` tries in a row without progress)."""
    failures = 0
    while True:
        start = w.written
        try:
            with upstream.open(repo, commit, f.path, start=start) as chunks:
                for chunk in chunks:
                    w.write(chunk)
                    on_bytes(len(chunk))
            if w.written >= f.size:
                return
            raise UpstreamError(f"{f.path}: upstream closed after {w.written} of {f.size} bytes")
        except (httpx.TransportError, UpstreamError) as exc:
            if isinstance(exc, NO_RETRY) or failures >= resume_attempts:
                raise
            failures = 0 if w.written > start else failures + 1
            log.warning("%s: %s; resuming at byte %d", f.path, exc, w.written)
            time.sleep(min(2 ** failures * 0.2, 5))


@dataclass
class ChunkResult:
    """What a child did with a chunk: the files verified and stored (or staged), and the first error."""

    done: list[tuple[str, Digests]] = field(default_factory=list)
    staged: list[tuple[str, str]] = field(default_factory=list)  # for the parent's batch to adopt
    nbytes: int = 0
    error: BaseException | None = None
    telemetry: dict[tuple[str, str], float] = field(default_factory=dict)  # what the child counted meanwhile


# ----------------------------------------------------------------------------- the child side

_stores: dict[str, BlobStore] = {}
_upstreams: dict[UpstreamSpec, HubUpstream] = {}
_threads: ThreadPoolExecutor | None = None
_child_lock = threading.Lock()


def _child_start(parent: int) -> None:
    """Leave when the parent is gone (a SIGKILLed worker must not leave fetchers behind)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _child_objects(storage: StorageSettings, spec: UpstreamSpec, threads: int) -> tuple[BlobStore, HubUpstream,
                                                                                         ThreadPoolExecutor]:
    from mirror.storage import open_store

    global _threads
    with _child_lock:
        key = storage.model_dump_json()
        if key not in _stores:
            _stores[key] = open_store(storage)
        if spec not in _upstreams:
            for old in list(_upstreams.values()):  # a new token or upstream: the old client is done
                old.close()
            _upstreams.clear()
            _upstreams[spec] = spec.connect()
        if _threads is None or _threads._max_workers < threads:
            _threads = ThreadPoolExecutor(threads, thread_name_prefix="fetch")
        return _stores[key], _upstreams[spec], _threads


def _portable(exc: BaseException, path: str) -> BaseException:
    """``exc`` if it survives the pipe to the parent (hubgate's own errors do), else an UpstreamError naming it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - anything that does not pickle is reported by name
        return UpstreamError(f"{path}: {type(exc).__name__}: {exc}")


def _fetch_chunk(storage: StorageSettings, spec: UpstreamSpec, repo: RepoRef, commit: str,
                 files: list[UpstreamFile], threads: int, resume_attempts: int) -> ChunkResult:
    store, upstream, pool = _child_objects(storage, spec, threads)
    result = ChunkResult()
    counted_before = TELEMETRY.snapshot()  # a child runs one chunk at a time
    batch = store.batch()
    counted = threading.Lock()

    def one(f: UpstreamFile) -> Digests:
        def on_bytes(n: int) -> None:
            with counted:
                result.nbytes += n

        expect_oid = None if f.lfs_sha256 else f.oid
        with store.ingest(size=f.size, sha256=f.lfs_sha256, git_oid=expect_oid, what=f.path, batch=batch) as w:
            stream_into(upstream, repo, commit, f, w, on_bytes, resume_attempts)
            return w.commit()

    futures = [(f, pool.submit(one, f)) for f in files]
    for f, fut in futures:
        try:
            result.done.append((f.path, fut.result()))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises the first
            if result.error is None:
                result.error = _portable(exc, f.path)
    result.staged = batch.hand_off()
    result.telemetry = {k: v - counted_before.get(k, 0) for k, v in TELEMETRY.snapshot().items()
                        if v != counted_before.get(k, 0)}
    return result


# ----------------------------------------------------------------------------- the parent side

_executors: dict[int, ProcessPoolExecutor] = {}
_executors_lock = threading.Lock()


def _executor(processes: int) -> ProcessPoolExecutor:
    with _executors_lock:
        pool = _executors.get(processes)
        if pool is None or getattr(pool, "_broken", False):
            pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_child_start, initargs=(os.getpid(),))
            _executors[processes] = pool
        return pool


def _forget(pool: ProcessPoolExecutor) -> None:
    with _executors_lock:
        for k, v in list(_executors.items()):
            if v is pool:
                del _executors[k]
    pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class FetchPool:
    """Child processes that fetch chunks of small files into ``storage`` (the parent's own store)."""

    storage: StorageSettings
    processes: int = 2
    threads: int = 2  # downloads in flight in each child

    def submit(self, spec: UpstreamSpec, repo: RepoRef, commit: str, files: list[UpstreamFile],
               resume_attempts: int) -> Future[ChunkResult]:
        pool = _executor(self.processes)
        try:
            return pool.submit(_fetch_chunk, self.storage, spec, repo, commit, files, self.threads, resume_attempts)
        except BrokenProcessPool as exc:  # a child died (killed, out of memory): start new ones next time
            _forget(pool)
            raise UpstreamError(f"A fetch process died ({exc}); the retry starts new ones") from exc

    @staticmethod
    def check(fut: Future[ChunkResult]) -> ChunkResult:
        """The chunk's result, with what the child counted (upstream retries and errors) added to this process's
        metrics; a dead child (BrokenProcessPool) becomes an UpstreamError and new children."""
        try:
            result = fut.result()
            for (name, label), n in result.telemetry.items():
                TELEMETRY.add(name, n, label)
            return result
        except BrokenProcessPool as exc:
            with _executors_lock:
                broken = [p for p in _executors.values() if getattr(p, "_broken", False)]
            for p in broken:
                _forget(p)
            raise UpstreamError(f"A fetch process died during the sync ({exc}); the retry starts new ones") from exc
