"""create_app(settings): build the services, mount the routes, install the error handlers, run the in-process worker."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from api.admin.routes import router as admin_router
from api.errors import hubgate_error_handler
from api.hub import files, repos
from api.hub.cache import MetadataCache
from api.services import Services
from api.settings import Settings, load
from mirror import signing
from mirror.storage import open_store
from mirror.sync import SyncOptions, Syncer
from mirror.worker import Worker
from registry.db import make_engine
from registry.errors import HubgateError

log = logging.getLogger(__name__)


def build_services(settings: Settings) -> Services:
    """Open the DB and the store once; raises StorageError / DB errors naming what is wrong."""
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database)
    store = open_store(settings.storage_settings)
    key_path = settings.signing_key_path
    key = signing.load_private_key(key_path) if key_path.exists() else signing.generate_key(key_path)
    cache = MetadataCache(engine, ref_ttl=settings.ref_cache_seconds)
    return Services(settings, engine, store, cache, signer=signing.Signer(key))


def build_worker(svc: Services) -> Worker:
    options = SyncOptions(file_workers=svc.settings.sync_file_workers, range_workers=svc.settings.sync_range_workers)
    syncer = Syncer(svc.engine, svc.store, svc.upstream, options, signer=svc.signer,
                    instance=svc.settings.instance_name)
    return Worker(svc.engine, syncer, lease_seconds=svc.settings.worker_lease_seconds)


def create_app(settings: Settings, services: Services | None = None, *, run_worker: bool | None = None) -> "HubgateApp":
    svc = services or build_services(settings)
    start_worker = settings.worker_in_process if run_worker is None else run_worker

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker = build_worker(svc) if start_worker else None
        if worker is not None:
            worker.start(settings.worker_threads)
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()

    admin = FastAPI(title="hubgate", version="0.1.0", docs_url="/registry/docs",
                    openapi_url="/registry/openapi.json", lifespan=lifespan)
    admin.state.services = svc
    admin.add_exception_handler(HubgateError, hubgate_error_handler)
    admin.include_router(admin_router)

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


class HubgateApp:
    """The ASGI entry point: ``/registry/…`` and ``/healthz`` go to the admin app (FastAPI, which also
    owns the lifespan and so the in-process worker); everything else to the Hub-compatible app."""

    def __init__(self, hub: Starlette, admin: FastAPI, services: Services) -> None:
        self.hub, self.admin, self.services = hub, admin, services
        self.state = admin.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "lifespan" or path.startswith(_ADMIN_PATHS):
            await self.admin(scope, receive, send)
        elif scope["type"] == "http" and not path.startswith("/api/"):
            await files.serve(self.services, scope, receive, send)  # /{repo}/resolve/{rev}/{path}
        else:
            await self.hub(scope, receive, send)


_ADMIN_PATHS = ("/registry/", "/healthz")


def app_from_env() -> "HubgateApp":
    """Factory for ``uvicorn --factory`` (multi-worker serve): each worker loads the settings once."""
    return create_app(load())
