"""Probes, metrics and the API docs: ``/healthz`` (liveness), ``/readyz`` (readiness), ``/metrics``
(Prometheus), ``/registry/docs`` and ``/registry/redoc`` with their assets served from an installed
package (fastapi-offline's copies of Swagger UI and ReDoc): nothing is fetched from a CDN, so the pages
work on an air-gapped network.

``/readyz`` answers 200 only when every part the API needs answers: the database (a query), its schema
(at the newest migration), the store (an object read, a write that is then discarded) and, when
``hubgate serve`` runs the worker in process, the worker's claim loop. Otherwise 503, naming each
failing part and why. Checks run off the event loop with a time limit each.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from api.observability import Observer, build_registry, metrics_body

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 5.0
DOCS_ASSETS_PREFIX = "/registry/docs/assets"
_ASSETS = {  # name -> content type: the files of fastapi_offline/static that the pages use
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}


# -- readiness


def _check_database(svc: Any) -> str:
    from sqlalchemy import text

    from registry.db import current_revision, head_revision

    with svc.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        current = current_revision(connection)
    if current != head_revision():
        raise RuntimeError(f"schema at {current or 'nothing'}, this hubgate needs {head_revision()}: "
                           "run `hubgate db upgrade` or start one hubgate to migrate")
    return f"ok (schema {current})"


def _check_store(svc: Any) -> str:
    from mirror.storage import layout

    driver = svc.store.driver
    driver.get_bytes(layout.LAYOUT_KEY)  # readable
    writer = driver.writer(layout.upload_key())  # writable: a temporary upload, discarded
    try:
        writer.write(b"hubgate readiness probe\n")
    finally:
        writer.cancel()
    return f"ok ({driver.name})"


async def _run_check(fn: Any, svc: Any) -> tuple[bool, str]:
    try:
        return True, await asyncio.wait_for(run_in_threadpool(fn, svc), CHECK_TIMEOUT_SECONDS)
    except asyncio.TimeoutError:
        return False, f"no answer within {CHECK_TIMEOUT_SECONDS:g}s"
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        return False, str(message).splitlines()[0][:500]


async def readiness(app: FastAPI) -> tuple[dict[str, str], list[str]]:
    """(each part's state, the failing parts); ready when the second is empty."""
    svc = app.state.services
    database, store = await asyncio.gather(_run_check(_check_database, svc), _run_check(_check_store, svc))
    checks = {"database": database, "store": store}
    worker = getattr(app.state, "worker", None)
    if worker is None:
        checks["worker"] = (True, "not run by this process (HUBGATE_WORKER_IN_PROCESS=false)")
    else:
        problem = worker.health()
        checks["worker"] = (problem is None, problem or "ok")
    return {name: text for name, (_, text) in checks.items()}, [name for name, (ok, _) in checks.items() if not ok]


# -- the routes


def install(app: FastAPI, observer: Observer) -> None:
    """Add /readyz, /metrics and the offline API docs to the admin app."""
    registry = build_registry(observer, app.state.services) if observer.metrics else None

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        started = time.perf_counter()
        checks, failing = await readiness(app)
        if failing:
            log.warning("not ready: %s", "; ".join(f"{name}: {checks[name]}" for name in failing))
        body = {"status": "not ready" if failing else "ready", "checks": checks, "failing": failing,
                "seconds": round(time.perf_counter() - started, 3)}
        return JSONResponse(body, status_code=503 if failing else 200)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if registry is None:
            return JSONResponse({"error": "Metrics are off (HUBGATE_METRICS=false)"}, status_code=404)
        body, content_type = await run_in_threadpool(metrics_body, registry, request.headers.get("accept"))
        return Response(body, media_type=content_type)

    @app.get("/registry/docs", include_in_schema=False)
    async def swagger() -> Response:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/registry/openapi.json", title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_ASSETS_PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_PREFIX}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
        )

    @app.get("/registry/redoc", include_in_schema=False)
    async def redoc() -> Response:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/registry/openapi.json", title=f"{app.title} - API",
            redoc_js_url=f"{DOCS_ASSETS_PREFIX}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS_PREFIX}/favicon.png", with_google_fonts=False,
        )

    @app.get(DOCS_ASSETS_PREFIX + "/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> Response:
        if name not in _ASSETS:
            return JSONResponse({"error": "Not found"}, status_code=404)
        data = await run_in_threadpool(_asset, name)
        return Response(data, media_type=_ASSETS[name], headers={"cache-control": "public, max-age=86400"})


@functools.cache
def _asset(name: str) -> bytes:
    data = resources.files("fastapi_offline").joinpath("static", name).read_bytes()
    if name == "redoc.standalone.js":  # its sidebar logo is the one thing it loads from a CDN
        data = data.replace(b"https://cdn.redoc.ly/redoc/logo-mini.svg", f"{DOCS_ASSETS_PREFIX}/favicon.png".encode())
    return data
