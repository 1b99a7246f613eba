"""What the routes share: settings, DB engine, blob store, upstream and caches, built once in create_app."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from api.hub.cache import CommitIndex, MetadataCache
from api.hub.singleflight import SingleFlight
from api.ratelimit import Limits
from api.settings import Settings
from mirror.signing import Signer
from mirror.storage.blobs import BlobStore
from mirror.upstream import HubUpstream, UpstreamError
from registry import access, secrets, tokens
from registry.access import AccessSnapshot
from registry.audit import Actor
from registry.catalog import SnapshotView
from registry.db import session_scope
from registry.types import RepoRef

_TOKEN_CACHE_SECONDS = 2.0
# Revocations, grants and visibility changes made by another process or replica reach this one through
# the access epoch (registry/access.py), read at most this often: a request finding the answer older waits
# for one small query (shared by every request waiting then). Within this process they apply at once.
_ACCESS_CHECK_SECONDS = 0.5


@dataclass(slots=True)
class _TokenEntry:
    actor: Actor | None
    expired: str | None  # the expiry message of a known but expired token
    expires_at: float | None  # the token's expiry (wall clock), checked on every cache hit
    deadline: float  # monotonic: when this cache entry goes stale

    def result(self) -> Actor | None:
        if self.expired is None and self.expires_at is not None and time.time() >= self.expires_at:
            self.expired = f"Token {self.actor.token_id if self.actor else ''} has expired: ask an admin for a new one"
        if self.expired is not None:
            raise tokens.TokenExpiredError(self.expired)
        return self.actor


@dataclass
class Services:
    settings: Settings
    engine: Engine
    store: BlobStore
    cache: MetadataCache
    signer: Signer | None = None
    xet: Any = None  # api.hub.xet.XetRuntime when HUBGATE_XET=on (the resolve path adds Xet headers then)
    observer: Any = None  # api.observability.Observer: metrics and the access log of each answered request
    _upstream: HubUpstream | None = None
    _upstream_token: str | None = None
    _tokens: dict[str, _TokenEntry] = field(default_factory=dict)
    _token_generation: int = 0  # bumped when the token cache is dropped: a load started before must not refill it
    _token_key: bytes | None = None
    _limits: Limits | None = None
    _access: AccessSnapshot = field(default_factory=lambda: AccessSnapshot(epoch=-1))
    _access_checked: float = float("-inf")
    _access_invalidated: float = float("-inf")
    denied_unrecorded: int = 0  # denied admin calls not written to the audit log (over its budget) since the last
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _snapshot_loads: SingleFlight[SnapshotView] = field(default_factory=SingleFlight)
    _index_loads: SingleFlight[CommitIndex] = field(default_factory=SingleFlight)
    _token_loads: SingleFlight[tuple[_TokenEntry]] = field(default_factory=SingleFlight)
    _access_loads: SingleFlight[AccessSnapshot] = field(default_factory=SingleFlight)

    # -- catalog, cached
    async def snapshot(self, repo: RepoRef, revision: str | None) -> SnapshotView:
        snap = self.cache.cached_snapshot(repo, revision)
        if snap is None:
            snap = await self._snapshot_loads.run((repo, revision), lambda: self.cache.load_snapshot(repo, revision))
            # A miss may be a repo published a moment ago and gated in the same transaction: read the access
            # epoch after the catalog, so that this process knows the gate before it serves the repo.
            await self.access_snapshot(fresh=True)
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
    async def actor(self, token: str, source: str | None = None) -> Actor | None:
        """The actor for a token (with its token id), or None if hubgate does not know it. Cached briefly,
        so the usual request never leaves the event loop; concurrent misses of one token share one DB
        lookup. Raises TokenExpiredError; RateLimitedError when ``source`` (the client address) has
        failed to authenticate too often."""
        await self.access_snapshot()  # drops the cache when another process revoked a token
        hit = self._tokens.get(token)
        if hit is not None and hit.deadline > time.monotonic():
            return hit.result()
        self.limits.check_auth_failures(source)
        # Keyed by the cache generation too: a request arriving after a revocation never joins a lookup
        # that started before it.
        entry = (await self._token_loads.run((token, self._token_generation), lambda: (self._load_token(token),)))[0]
        if entry.actor is None and entry.expired is None:
            self.limits.auth_failed(source)
        return entry.result()

    def _load_token(self, token: str) -> _TokenEntry:
        generation = self._token_generation
        actor: Actor | None = None
        expired = expires_at = None
        with session_scope(self.engine) as session:
            try:
                row = tokens.authenticate(session, token, key=self.token_key)
                actor = Actor(row.name, row.role, token_id=row.token_id)
                expires_at = row.expires_at.timestamp() if row.expires_at is not None else None
                tokens.touch(session, row)
            except tokens.TokenExpiredError as exc:
                expired = exc.message
            except tokens.NotAuthenticatedError:
                pass
        entry = _TokenEntry(actor, expired, expires_at, time.monotonic() + _TOKEN_CACHE_SECONDS)
        if len(self._tokens) > 10000:
            self._tokens.clear()
        if generation == self._token_generation:  # else access changed while this ran: do not cache it
            self._tokens[token] = entry
        return entry

    @property
    def token_key(self) -> bytes:
        """The HMAC subkey that token secrets are stored under (derived from the instance secret key)."""
        if self._token_key is None:
            self._token_key = tokens.derive_key(secrets.load_or_create_key(self.settings.key_file))
        return self._token_key

    @property
    def limits(self) -> Limits:
        if self._limits is None:
            s = self.settings
            self._limits = Limits.from_settings(
                auth_failures_per_minute=s.rate_limit_auth_failures_per_minute,
                requests_per_hour=s.rate_limit_requests_per_hour,
                hub_reads_per_minute_per_address=s.rate_limit_hub_reads_per_minute_per_address,
                hub_reads_per_minute_per_token=s.rate_limit_hub_reads_per_minute_per_token,
            )
        return self._limits

    # -- access (gated and private repos, grants), shared with every process through the database
    async def access_snapshot(self, *, fresh: bool = False) -> AccessSnapshot:
        """This process's access state, at most ``_ACCESS_CHECK_SECONDS`` behind the database (``fresh``:
        checked against it now)."""
        if fresh:  # not shared with a refresh already running: that one may have read the epoch too early
            return await run_in_threadpool(self._refresh_access)
        if time.monotonic() - self._access_checked < _ACCESS_CHECK_SECONDS:
            return self._access
        return await self._access_loads.run("epoch", self._refresh_access)

    def _refresh_access(self) -> AccessSnapshot:
        started = time.monotonic()
        with Session(self.engine) as session:
            epoch = access.current_epoch(session)
            snapshot = access.load_snapshot(session) if epoch != self._access.epoch else None
        with self._lock:
            if snapshot is not None and snapshot.epoch > self._access.epoch:  # never back to an older state
                self._drop_tokens()
                self._access = snapshot
            if started > self._access_invalidated:  # else a change made here since may be missing: check again
                self._access_checked = max(self._access_checked, started)
        return self._access

    def access_snapshot_sync(self) -> AccessSnapshot:
        """``access_snapshot`` for code running in the threadpool (admin routes)."""
        if time.monotonic() - self._access_checked < _ACCESS_CHECK_SECONDS:
            return self._access
        return self._refresh_access()

    def access_changed(self) -> None:
        """This process changed access (a revocation, a grant, a visibility): apply it to its next request."""
        self._drop_tokens()
        with self._lock:
            self._access_invalidated = time.monotonic()
            self._access_checked = float("-inf")

    def _drop_tokens(self) -> None:
        self._token_generation += 1
        self._tokens = {}

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
                self._upstream = HubUpstream(self.settings.upstream_url, token, egress=self.settings.upstream_egress)
                self._upstream_token = token
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
