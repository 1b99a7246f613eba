"""Per-process caches that keep the hot paths off the database.

A commit's file list never changes once published, so it is loaded once per (repo, commit)
and kept (LRU). Branch and tag names can move, so their answers live ``ref_ttl`` seconds.
Hundreds of GPU nodes HEADing the same file then cost a dict lookup each.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session

from api.hub import wire
from registry import catalog, gitobjects
from registry.catalog import FileView, SnapshotView
from registry.errors import EntryNotFoundError
from registry.types import RepoRef

K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    def __init__(self, capacity: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._capacity:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def _pointer_size(f: FileView) -> int:
    return len(gitobjects.lfs_pointer(f.sha256, f.size))


@dataclass
class CommitIndex:
    """Everything about one published commit that the read API needs, computed once."""

    snapshot: SnapshotView
    files: dict[str, FileView]
    paths: list[str]
    _headers: dict[str, list[tuple[bytes, bytes]]] = field(default_factory=dict)
    _tree_oids: dict[str, str] | None = None
    _dirs: list[str] | None = None

    @property
    def commit(self) -> str:
        return self.snapshot.commit

    def entry(self, path: str) -> FileView:
        f = self.files.get(path)
        if f is None:
            raise EntryNotFoundError(f"Entry {path!r} not found in {self.snapshot.repo.id}", commit=self.commit)
        return f

    def headers(self, f: FileView) -> list[tuple[bytes, bytes]]:
        h = self._headers.get(f.path)
        if h is None:
            h = self._headers[f.path] = wire.file_headers(f, self.commit)
        return h

    def blob_oid(self, f: FileView) -> str:
        """What git stores for the path (pointer id for LFS files): the tree listing's ``oid``."""
        if not f.lfs:
            return f.git_oid
        return gitobjects.blob_oid(gitobjects.lfs_pointer(f.sha256, f.size))

    @property
    def tree_oids(self) -> dict[str, str]:
        if self._tree_oids is None:
            self._tree_oids = gitobjects.tree_oids(
                gitobjects.GitFile(f.path, self.blob_oid(f)) for f in self.files.values()
            )
        return self._tree_oids

    @property
    def dirs(self) -> list[str]:
        if self._dirs is None:
            self._dirs = sorted(d for d in self.tree_oids if d)
        return self._dirs

    def is_dir(self, path: str) -> bool:
        return path == "" or path in self.tree_oids

    def pointer_size(self, f: FileView) -> int:
        return _pointer_size(f)


class MetadataCache:
    def __init__(self, engine: Engine, *, ref_ttl: float, commits: int = 256, revisions: int = 4096) -> None:
        self._engine = engine
        self._ref_ttl = ref_ttl
        self._commits: _Lru[tuple[RepoRef, str], CommitIndex] = _Lru(commits)
        self._revisions: _Lru[tuple[RepoRef, str | None], tuple[SnapshotView, float]] = _Lru(revisions)
        # (cache, hit|miss) -> count, for /metrics (api/observability.py); plain ints: this runs on every request
        self.lookups: dict[tuple[str, str], int] = {("snapshot", "hit"): 0, ("snapshot", "miss"): 0,
                                                    ("index", "hit"): 0, ("index", "miss"): 0}

    def cached_snapshot(self, repo: RepoRef, revision: str | None) -> SnapshotView | None:
        """A fresh cached answer, or None (then call ``load_snapshot`` off the event loop)."""
        hit = self._revisions.get((repo, revision))
        if hit is None or hit[1] < time.monotonic():
            self.lookups[("snapshot", "miss")] += 1
            return None
        self.lookups[("snapshot", "hit")] += 1
        return hit[0]

    def load_snapshot(self, repo: RepoRef, revision: str | None) -> SnapshotView:
        """Blocking: resolve against the DB. Raises RepoNotFoundError / RevisionNotFoundError."""
        with Session(self._engine) as session:
            snap = catalog.resolve(session, repo, revision)
        # Even a commit's answer expires: the snapshot may be marked unavailable by a scrub or removed.
        ttl = self._ref_ttl
        if ttl > 0:
            self._revisions.put((repo, revision), (snap, time.monotonic() + ttl))
        return snap

    def cached_index(self, repo: RepoRef, commit: str) -> CommitIndex | None:
        index = self._commits.get((repo, commit))
        self.lookups[("index", "miss" if index is None else "hit")] += 1
        return index

    def load_index(self, snapshot: SnapshotView) -> CommitIndex:
        """Blocking: load a commit's files from the DB."""
        with Session(self._engine) as session:
            files = catalog.list_files(session, snapshot.repo, snapshot.commit)
        index = CommitIndex(snapshot, {f.path: f for f in files}, [f.path for f in files])
        self._commits.put((snapshot.repo, snapshot.commit), index)
        return index

    def invalidate(self) -> None:
        """Forget everything (a ref moved or a snapshot was removed in this process)."""
        self._commits.clear()
        self._revisions.clear()
