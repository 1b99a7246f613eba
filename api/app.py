"""create_app(settings): build the services, mount the routes, install the error handlers, run the in-process worker."""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from api.admin.access_routes import router as access_router
from api.admin.routes import router as admin_router
from api import health, logs, read_only
from api.edge import Edge
from api.errors import hubgate_error_handler
from api.hub import files, repos, xet
from api.hub.cache import MetadataCache
from api.observability import Observer
from api.services import Services
from api.ui import install as install_ui
from api.settings import Settings, load
from mirror import signing
from mirror.fetchpool import FetchPool
from mirror.scan.gate import Gate
from mirror.storage import open_store
from mirror.sync import SyncOptions, Syncer
from mirror.worker import Worker
from registry.db import make_engine
from sqlalchemy.exc import SQLAlchemyError

from api.exit_codes import SetupError, database_problem
from registry.errors import HubgateError

log = logging.getLogger(__name__)


def build_services(settings: Settings) -> Services:
    """Open the DB and the store once; raises SetupError (naming the setting) / StorageError."""
    try:
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SetupError(f"cannot use the data dir {settings.data_dir} (HUBGATE_DATA_DIR): {exc.strerror}") from exc
    try:
        engine = make_engine(settings.database)
    except (OSError, SQLAlchemyError) as exc:
        raise SetupError(database_problem(settings.database.url, exc)) from exc
    store = open_store(settings.storage_settings)
    key_path = settings.signing_key_path
    key = signing.load_private_key(key_path) if key_path.exists() else signing.generate_key(key_path)
    cache = MetadataCache(engine, ref_ttl=settings.ref_cache_seconds)
    svc = Services(settings, engine, store, cache, signer=signing.Signer(key))
    if settings.xet == "on":
        svc.xet = xet.XetRuntime.from_settings(settings, store)
    return svc


def build_worker(svc: Services) -> Worker:
    s = svc.settings
    options = SyncOptions(file_workers=s.sync_file_workers, range_workers=s.sync_range_workers)
    # The children share the file workers: as many downloads in flight as with threads alone.
    pool = FetchPool(s.storage_settings, s.sync_fetch_processes, -(-s.sync_file_workers // s.sync_fetch_processes)) \
        if s.sync_fetch_processes else None
    syncer = Syncer(svc.engine, svc.store, svc.upstream, options, signer=svc.signer,
                    instance=s.instance_name, gate=Gate(svc.store, s.scan_limits, signer=svc.signer),
                    xet=xet.builder_for(s, svc.store), fetch_pool=pool)
    return Worker(svc.engine, syncer, lease_seconds=svc.settings.worker_lease_seconds)


def create_app(settings: Settings, services: Services | None = None, *, run_worker: bool | None = None) -> "HubgateApp":
    svc = services or build_services(settings)
    start_worker = settings.worker_in_process if run_worker is None else run_worker

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = build_worker(svc) if start_worker else None
        app.state.worker = worker  # /readyz checks its claim loop (api/health.py)
        if worker is not None:
            worker.start(settings.worker_threads)
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()
            # the last requests' access lines: uvicorn re-raises SIGTERM after this, so no atexit hook runs
            logs.ACCESS.flush()

    # docs_url/redoc_url off: api/health.py serves both pages with their assets from a package (no CDN)
    admin = FastAPI(title="hubgate", version="0.1.0", docs_url=None, redoc_url=None,
                    openapi_url="/registry/openapi.json", lifespan=lifespan)
    admin.state.services = svc
    admin.add_exception_handler(HubgateError, hubgate_error_handler)
    admin.include_router(admin_router)
    admin.include_router(access_router)
    install_ui(admin, svc)  # the web catalog and approval desk, under /-/ (api/ui)
    svc.observer = Observer(settings)
    health.install(admin, svc.observer)  # /readyz, /metrics, /registry/docs, /registry/redoc

    @admin.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # The Hub routes are the hot paths (hundreds of GPU nodes HEAD the same files at once): plain
    # Starlette, without FastAPI's per-request dependency and validation machinery.
    hub = Starlette(
        routes=[
            Route("/api/whoami-v2", repos.whoami, methods=["GET"]),
            Route("/api/agent-harnesses", repos.agent_harnesses, methods=["GET"]),
            Route("/api/models", repos.list_repos, methods=["GET"]),
            Route("/api/datasets", repos.list_repos, methods=["GET"]),
            Route("/api/{repo_type:str}/{rest:path}", repos.repo_api, methods=["GET", "POST"]),
        ],
        exception_handlers={HubgateError: hubgate_error_handler},
    )
    hub.state.services = svc
    return HubgateApp(hub, admin, svc)


class HubgateApp(Edge):
    """The ASGI entry point: every HTTP request passes the edge first (api/edge.py, whose ``__call__`` this
    is: Host allowlist, X-Request-Id, body caps), then ``route``: ``/registry/…``, ``/healthz`` and ``/-/``
    go to the admin app (FastAPI, which also owns the lifespan and so the in-process worker); everything
    else to the Hub-compatible app, the resolve hot path straight to ``files.serve``."""

    def __init__(self, hub: Starlette, admin: FastAPI, services: Services) -> None:
        self.hub, self.admin, self.services = hub, admin, services
        self.xet = xet.build_app(services)  # answers 404 while HUBGATE_XET=off
        self.state = admin.state
        observer = services.observer
        routed = observer.wrap(self.route) if observer is not None else self.route  # metrics, access log
        super().__init__(routed, services.settings, resolve=functools.partial(files.serve, services),
                         routed_prefixes=_ROUTED_PREFIXES)

    async def route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and scope["method"] in read_only.WRITE_METHODS and read_only.is_write(path):
            await read_only.refuse(scope, receive, send)  # uploads, commits, repo changes: 403, Hub-style
        elif scope["type"] == "lifespan" or path.startswith(_ADMIN_PATHS) or path in _ADMIN_EXACT:
            await self.admin(scope, receive, send)
        elif scope["type"] == "http" and xet.is_xet_path(path):
            await self.xet(scope, receive, send)  # the refresh route and the CAS (api/hub/xet.py)
        elif scope["type"] == "http" and not path.startswith("/api/"):
            await files.serve(self.services, scope, receive, send)  # /{repo}/resolve/{rev}/{path}
        else:
            await self.hub(scope, receive, send)


_ADMIN_PATHS = ("/registry/", "/healthz", "/-/")  # /-/: the web pages; no repo id can start with "-"
_ADMIN_EXACT = ("/readyz", "/metrics")  # exact: a repo id may start with "metrics"
_ROUTED_PREFIXES = ("/api/", *_ADMIN_PATHS, *_ADMIN_EXACT, *xet.PREFIXES)  # everything else is /{repo}/resolve/{rev}/{path} (files.serve)


def settle_heap() -> None:
    """For a long-running process, once start-up is done: leave what it built (modules, settings, services:
    most of the heap, for good) out of the cyclic garbage collector's full passes. Without this a full pass
    walks every one of those objects again, 0.1 s each on the project's 2-core box, one or two per
    1,000-file sync, in the worker thread (bench/sync_bench.py's publish phase went from 0.10-0.21 s to
    0.09-0.11 s). Objects made later are collected as always."""
    gc.collect()
    gc.freeze()


def app_from_env() -> "HubgateApp":
    """Factory for ``uvicorn --factory`` (multi-worker serve): each worker loads the settings once."""
    settings = load()
    logs.configure(settings.log_level, settings.log_format)  # each worker process: one format, one level
    app = create_app(settings)
    settle_heap()
    return app
