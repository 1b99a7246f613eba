"""What the routes share: settings, DB engine, blob store, upstream and caches, built once in create_app."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.requests import Request

from api.hub.cache import CommitIndex, MetadataCache
from api.hub.singleflight import SingleFlight
from api.settings import Settings
from mirror.signing import Signer
from mirror.storage.blobs import BlobStore
from mirror.upstream import HubUpstream, UpstreamError
from registry import secrets, tokens
from registry.audit import Actor
from registry.catalog import SnapshotView
from registry.db import session_scope
from registry.types import RepoRef

_TOKEN_CACHE_SECONDS = 2.0


@dataclass
class Services:
    settings: Settings
    engine: Engine
    store: BlobStore
    cache: MetadataCache
    signer: Signer | None = None
    _upstream: HubUpstream | None = None
    _upstream_token: str | None = None
    _tokens: dict[str, tuple[Actor | None, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _snapshot_loads: SingleFlight[SnapshotView] = field(default_factory=SingleFlight)
    _index_loads: SingleFlight[CommitIndex] = field(default_factory=SingleFlight)
    _token_loads: SingleFlight[tuple[Actor | None]] = field(default_factory=SingleFlight)

    # -- catalog, cached
    async def snapshot(self, repo: RepoRef, revision: str | None) -> SnapshotView:
        snap = self.cache.cached_snapshot(repo, revision)
        if snap is None:
            snap = await self._snapshot_loads.run((repo, revision), lambda: self.cache.load_snapshot(repo, revision))
        return snap

    async def index(self, snapshot: SnapshotView) -> CommitIndex:
        index = self.cache.cached_index(snapshot.repo, snapshot.commit)
        if index is None:
            index = await self._index_loads.run((snapshot.repo, snapshot.commit), lambda: self.cache.load_index(snapshot))
        return index

    def base_url(self, request: Request) -> str:
        """The public origin for absolute URLs: configured, else the request's own."""
        if self.settings.public_url:
            return self.settings.public_url
        return f"{request.url.scheme}://{request.url.netloc}"

    # -- auth
    async def actor(self, token: str) -> Actor | None:
        """The actor for a token, or None if hubgate does not know it. Cached briefly, so the usual
        request never leaves the event loop; concurrent misses of one token share one DB lookup."""
        hit = self._tokens.get(token)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        return (await self._token_loads.run(token, lambda: (self._load_actor(token),)))[0]

    def _load_actor(self, token: str) -> Actor | None:
        with session_scope(self.engine) as session:
            try:
                row = tokens.authenticate(session, token)
                actor: Actor | None = Actor(row.name, row.role)
                tokens.touch(session, row)
            except tokens.NotAuthenticatedError:
                actor = None
        if len(self._tokens) > 10000:
            self._tokens.clear()
        self._tokens[token] = (actor, time.monotonic() + _TOKEN_CACHE_SECONDS)
        return actor

    # -- upstream
    def upstream(self) -> HubUpstream:
        """The upstream client, rebuilt when the stored upstream token changed (``hubgate upstream-token set``)."""
        if self.settings.upstream_url is None:
            raise UpstreamError(
                "No upstream is configured (HUBGATE_UPSTREAM_URL is empty): this is a sealed side; "
                "carry requests out with `hubgate requests export`"
            )
        token = self.settings.upstream_token
        if token is None:
            key = secrets.load_or_create_key(self.settings.key_file)
            with Session(self.engine) as session:
                token = secrets.get_secret(session, key, secrets.UPSTREAM_TOKEN)
        with self._lock:
            if self._upstream is None or self._upstream_token != token:
                # The old client is left to the garbage collector: a sync in flight may still use it.
                self._upstream, self._upstream_token = HubUpstream(self.settings.upstream_url, token), token
            return self._upstream

    def close(self) -> None:
        with self._lock:
            if self._upstream is not None:
                self._upstream.close()
            self._upstream = None


def bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]
