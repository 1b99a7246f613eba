"""create_app(settings): build the services, mount the routes, install the error handlers."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.engine import Engine
from starlette.routing import Route

from api.errors import hubgate_error_handler
from api.hub import files, repos
from api.hub.cache import MetadataCache
from api.services import Services
from api.settings import Settings, load
from mirror.storage import open_store
from mirror.storage.blobs import BlobStore
from registry.db import make_engine
from registry.errors import HubgateError

log = logging.getLogger(__name__)


def build_services(settings: Settings) -> Services:
    """Open the DB and the store once; raises StorageError / DB errors naming what is wrong."""
    if settings.database_url is None or settings.storage == "local":
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    engine: Engine = make_engine(settings.database)
    store: BlobStore = open_store(settings.storage_settings)
    return Services(settings, engine, store, MetadataCache(engine, ref_ttl=settings.ref_cache_seconds))


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    svc = services or build_services(settings)
    app = FastAPI(title="hubgate", version="0.1.0", docs_url="/registry/docs", openapi_url="/registry/openapi.json")
    app.state.services = svc
    app.add_exception_handler(HubgateError, hubgate_error_handler)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    hub_routes = [
        Route("/api/whoami-v2", repos.whoami, methods=["GET"]),
        Route("/api/agent-harnesses", repos.agent_harnesses, methods=["GET"]),
        Route("/api/models", repos.list_repos, methods=["GET"]),
        Route("/api/datasets", repos.list_repos, methods=["GET"]),
        Route("/api/{repo_type:str}/{rest:path}", repos.repo_api, methods=["GET", "POST"]),
        # Last: everything else may be /{repo}/resolve/{rev}/{path}.
        Route("/{rest:path}", files.resolve_file, methods=["GET", "HEAD"]),
    ]
    app.router.routes.extend(hub_routes)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (multi-worker serve): each worker loads the settings once."""
    return create_app(load())
