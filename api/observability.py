"""Per-request metrics and the access log; ``GET /metrics`` in the Prometheus text format.

The request path only adds to plain Python numbers (a dict entry per method/route/status, a latency
bucket, bytes by serving mode): no lock, no Prometheus object. They run on the event loop thread,
the only one that records, so no update is lost. A scrape turns them into metric families
(``StatsCollector``), with what the database says at that moment (requests and jobs by state, the
queue's depth and oldest job, snapshots by state, the last scrub; cached a few seconds so that
scrapes cannot load the database) and the byte layer's counters (syncs, upstream retries and errors,
scrubs: mirror/telemetry.py).

Routes are labelled by template (``/{repo}/resolve/{rev}/{path}``, ``/registry/v1/requests/{pk}``),
never by the raw path, so the number of series is bounded whatever clients ask for; a path that
matches no route is ``other``.

With ``HUBGATE_WORKERS`` > 1 every uvicorn process keeps its own numbers and a scrape reads the process
that took it: in Kubernetes run one process per pod (the default) and let Prometheus scrape each pod.
"""

from __future__ import annotations

import bisect
import logging
import platform
import threading
import time
from collections.abc import Iterator
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.logs import ACCESS
from api.protocol import ZEROCOPY
from api.request_context import current_request_id

log = logging.getLogger(__name__)

VERSION = "0.1.0"
RESOLVE_ROUTE = "/{repo}/resolve/{rev}/{path}"
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_DB_CACHE_SECONDS = 5.0
_REPO_ACTIONS = ("revision", "tree", "paths-info", "refs", "commits", "xet-read-token", "preupload", "commit")


class RequestStats:
    """Counters of answered requests, by (method, route, status); latency buckets by (method, route)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[tuple[str, str], list[float]] = {}  # one count per bucket, +Inf, then the sum
        self.bytes: dict[str, int] = {}  # by mode: local | proxy | redirect | api

    def record(self, method: str, route: str, status: int, seconds: float, nbytes: int, mode: str) -> None:
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        buckets = self.latency.get((method, route))
        if buckets is None:
            buckets = self.latency[(method, route)] = [0.0] * (len(BUCKETS) + 2)
        buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        buckets[-1] += seconds
        if nbytes:
            self.bytes[mode] = self.bytes.get(mode, 0) + nbytes


def actor_of(scope: Scope) -> str:
    """Who made the request, as the access log names it: the token's name and id (never the token)."""
    actor = scope.get("hubgate.actor") or (scope.get("state") or {}).get("hubgate_actor")
    if actor is None:
        return "-"
    token_id = getattr(actor, "token_id", None)
    return f"{actor.name}({token_id})" if token_id else str(actor.name)


def route_of(scope: Scope) -> str:
    """The route template of a request that went through the routers (not the resolve hot path)."""
    raw = scope.get("path", "")
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and not raw.startswith(("/api/", "/xet/")):  # the Hub app's routes are too coarse
        return path
    if raw.startswith("/api/"):
        segs = raw.split("/")[2:]
        if segs[0] == "repos" and len(segs) == 2 and segs[1] in ("create", "delete", "move"):
            return "/api/repos/" + segs[1]
        if len(segs) == 1 or segs[0] not in ("models", "datasets", "spaces"):
            return "/api/" + segs[0] if segs[0] in ("models", "datasets", "whoami-v2", "agent-harnesses") else "/api/other"
        action = next((s for s in segs[2:4] if s in _REPO_ACTIONS), None)
        return "/api/{type}s/{repo}" + (f"/{action}" if action else "")
    if raw.startswith("/xet/"):
        return "/xet/" + raw.split("/")[2] if raw.count("/") > 2 else "/xet"
    if "/resolve/" in raw:
        return RESOLVE_ROUTE
    if raw in ("/healthz", "/readyz", "/metrics"):
        return raw
    return "other"


class Observer:
    """Records one answered request: metrics (``HUBGATE_METRICS``) and the access log line (``HUBGATE_ACCESS_LOG``)."""

    def __init__(self, settings: Any) -> None:
        self.stats = RequestStats()
        self.metrics = bool(settings.metrics)
        self.access = bool(settings.access_log)
        self.storage_mode = "local" if settings.storage == "local" else "proxy"

    def done(self, scope: Scope, route: str, status: int, nbytes: int, started: float, mode: str) -> None:
        seconds = time.perf_counter() - started
        method = scope["method"]
        if self.metrics:
            self.stats.record(method, route, status, seconds, nbytes, mode)
        if self.access and ACCESS.enabled():
            actor = actor_of(scope)
            path = scope.get("path", "")[:300]
            client = scope.get("client")
            ms = seconds * 1000
            ACCESS.line(current_request_id() or "-",
                        {"method": method, "route": route, "path": path, "status": status, "bytes": nbytes,
                         "duration_ms": round(ms, 3), "actor": actor, "client": client[0] if client else None},
                        f"{method} {path} {status} {nbytes}B {ms:.1f}ms {actor} route={route}")

    def resolve_done(self, scope: Scope, response: Any, started: float) -> None:
        """The resolve hot path (api/hub/files.py), after its answer was sent."""
        status = response.status_code
        if status == 302:
            mode = "redirect"
            nbytes = next((int(v) for k, v in response.raw_headers if k == b"x-linked-size"), 0)
        else:
            mode = self.storage_mode if status in (200, 206) else "api"
            nbytes = getattr(response, "_length", 0) if scope["method"] == "GET" and status in (200, 206) else 0
        self.done(scope, RESOLVE_ROUTE, status, nbytes, started, mode)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` with every HTTP answer observed (the routed requests: admin, Hub API, Xet, web pages)."""

        async def observed(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            answer = {"status": 500, "bytes": 0}

            async def counting_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    answer["status"] = message["status"]
                elif message["type"] == "http.response.body":
                    answer["bytes"] += len(message.get("body", b""))
                elif message["type"] == ZEROCOPY:
                    answer["bytes"] += message["count"]
                await send(message)

            try:
                await app(scope, receive, counting_send)
            finally:
                route = route_of(scope)
                mode = "api"
                if route == RESOLVE_ROUTE:
                    mode = self.storage_mode
                self.done(scope, route, answer["status"], answer["bytes"], started, mode)

        return observed


class StatsCollector:
    """Prometheus collector: the request counters, the database's numbers, the byte layer's counters."""

    def __init__(self, observer: Observer, services: Any) -> None:
        self.observer, self.services = observer, services
        self._db: tuple[float, Any] | None = None
        self._lock = threading.Lock()

    def _catalog(self) -> Any:
        from sqlmodel import Session

        from registry.stats import catalog_stats

        with self._lock:
            if self._db is not None and time.monotonic() - self._db[0] < _DB_CACHE_SECONDS:
                return self._db[1]
            try:
                with Session(self.services.engine) as session:
                    stats = catalog_stats(session)
            except Exception:  # noqa: BLE001 - the scrape still answers; /readyz names the database
                log.warning("metrics: the database did not answer", exc_info=True)
                stats = None
            self._db = (time.monotonic(), stats)
            return stats

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        from mirror import telemetry

        stats = self.observer.stats
        requests = CounterMetricFamily("hubgate_http_requests", "HTTP requests answered, by route template",
                                       labels=["method", "route", "status"])
        for (method, route, status), n in list(stats.requests.items()):
            requests.add_metric([method, route, str(status)], n)
        yield requests
        latency = HistogramMetricFamily("hubgate_http_request_duration_seconds",
                                        "Time to answer (until the last byte was handed to the server)",
                                        labels=["method", "route"])
        for (method, route), counts in list(stats.latency.items()):
            cumulative, buckets = 0.0, []
            for bound, n in zip((*BUCKETS, float("inf")), counts[:-1]):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([method, route], buckets, counts[-1])
        yield latency
        served = CounterMetricFamily("hubgate_served_bytes", "Response body bytes, by how they were served "
                                     "(local: from the local store; proxy: streamed from S3; redirect: size of the "
                                     "files clients were sent to S3 for; api: everything else)", labels=["mode"])
        for mode, n in list(stats.bytes.items()):
            served.add_metric([mode], n)
        yield served
        yield from self._cache_metrics()
        yield from self._byte_layer(telemetry.TELEMETRY.snapshot())
        yield from self._database()
        info = GaugeMetricFamily("hubgate_build_info", "hubgate's version (value 1)", labels=["version", "python"])
        info.add_metric([VERSION, platform.python_version()], 1)
        yield info

    def _cache_metrics(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        cache = self.services.cache
        family = CounterMetricFamily("hubgate_metadata_cache_lookups", "Catalog cache lookups on the Hub routes "
                                     "(snapshot: revision -> commit; index: a commit's files)",
                                     labels=["cache", "result"])
        for (name, result), n in sorted(getattr(cache, "lookups", {}).items()):
            family.add_metric([name, result], n)
        yield family

    def _byte_layer(self, counts: dict[tuple[str, str], float]) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        from mirror import telemetry as t

        specs = [
            (t.SYNC_BYTES, "hubgate_sync_bytes", "Bytes downloaded from the upstream by syncs in this process", None),
            (t.SYNC_FILES, "hubgate_sync_files", "Files downloaded and verified by syncs in this process", None),
            (t.SYNC_JOBS, "hubgate_sync_jobs", "Sync jobs run in this process, by outcome", "outcome"),
            (t.UPSTREAM_RETRIES, "hubgate_upstream_retries", "Upstream requests retried, by cause", "cause"),
            (t.UPSTREAM_ERRORS, "hubgate_upstream_errors", "Upstream requests that failed for good, by kind", "kind"),
            (t.SCRUB_BLOBS, "hubgate_scrub_blobs", "Blobs checked by verify/scrub in this process, by result", "result"),
        ]
        for name, metric, doc, label in specs:
            family = CounterMetricFamily(metric, doc, labels=[label] if label else [])
            values = [(lab, n) for (key, lab), n in counts.items() if key == name]
            if label is None:
                family.add_metric([], sum(n for _, n in values))
            for lab, n in sorted(values) if label else []:
                family.add_metric([lab], n)
            yield family

    def _database(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        stats = self._catalog()
        up = GaugeMetricFamily("hubgate_database_up", "1 when the last metrics query of the database succeeded")
        up.add_metric([], 0 if stats is None else 1)
        yield up
        if stats is None:
            return
        for metric, doc, values in (
            ("hubgate_mirror_requests", "Mirror requests by state", stats.requests),
            ("hubgate_jobs", "Jobs in the queue table by state", stats.jobs),
            ("hubgate_snapshots", "Published snapshots by state (unavailable: failed verify; blocked: by the scan)",
             stats.snapshots),
        ):
            family = GaugeMetricFamily(metric, doc, labels=["state"])
            for state, n in sorted(values.items()):
                family.add_metric([state], n)
            yield family
        yield GaugeMetricFamily("hubgate_job_queue_depth", "Jobs due and waiting for a worker", value=stats.queue_depth)
        yield GaugeMetricFamily("hubgate_job_queue_oldest_age_seconds", "Age of the oldest job waiting for a worker",
                                value=stats.oldest_queued_seconds)
        last = GaugeMetricFamily("hubgate_last_scrub_timestamp_seconds", "When verify/scrub last ran (0: never)",
                                 value=stats.last_scrub_at.timestamp() if stats.last_scrub_at else 0)
        yield last
        for result in ("corrupt", "missing"):
            yield GaugeMetricFamily(f"hubgate_last_scrub_{result}_blobs", f"Blobs the last verify found {result}",
                                    value=len(stats.last_scrub.get(result) or []))


def build_registry(observer: Observer, services: Any) -> Any:
    from prometheus_client import CollectorRegistry
    from prometheus_client.process_collector import ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(observer, services))
    ProcessCollector(registry=registry)
    return registry


def metrics_body(registry: Any, accept: str | None) -> tuple[bytes, str]:
    from prometheus_client import exposition

    encoder, content_type = exposition.choose_encoder(accept or "")
    return encoder(registry), content_type


def serve_worker_metrics(settings: Any, services: Any) -> None:
    """``hubgate worker`` with HUBGATE_WORKER_METRICS_PORT: /metrics (syncs, upstream retries, the queue) on
    HUBGATE_HOST:port, from a daemon thread."""
    from prometheus_client import start_http_server

    registry = build_registry(Observer(settings), services)
    start_http_server(settings.worker_metrics_port, addr=settings.host, registry=registry)
    log.info("worker metrics on http://%s:%d/metrics", settings.host, settings.worker_metrics_port)
