"""What the routes share: settings, DB engine, blob store and caches, built once in create_app."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from api.hub.cache import CommitIndex, MetadataCache
from api.settings import Settings
from mirror.storage.blobs import BlobStore
from registry.catalog import SnapshotView
from registry.types import RepoRef


@dataclass
class Services:
    settings: Settings
    engine: Engine
    store: BlobStore
    cache: MetadataCache

    async def snapshot(self, repo: RepoRef, revision: str | None) -> SnapshotView:
        snap = self.cache.cached_snapshot(repo, revision)
        if snap is None:
            snap = await run_in_threadpool(self.cache.load_snapshot, repo, revision)
        return snap

    async def index(self, snapshot: SnapshotView) -> CommitIndex:
        index = self.cache.cached_index(snapshot.repo, snapshot.commit)
        if index is None:
            index = await run_in_threadpool(self.cache.load_index, snapshot)
        return index

    def base_url(self, request: Request) -> str:
        """The public origin for absolute URLs: configured, else the request's own."""
        if self.settings.public_url:
            return self.settings.public_url
        return f"{request.url.scheme}://{request.url.netloc}"


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]
