"""Probes, Prometheus metrics and logs of a real ``hubgate serve`` process."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from .conftest import run, write_folder

pytestmark = pytest.mark.integration


def _families(text: str) -> dict[str, object]:
    from prometheus_client.parser import text_string_to_metric_families

    return {f.name: f for f in text_string_to_metric_families(text)}


def _samples(families: dict[str, object], name: str) -> list[tuple[dict[str, str], float]]:
    family = families[name]
    return [(s.labels, s.value) for s in family.samples]  # type: ignore[attr-defined]


def test_readyz_names_the_failing_part_and_healthz_stays_live(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = serve()
    ready = httpx.get(f"{s.url}/readyz")
    assert ready.status_code == 200, ready.text
    doc = ready.json()
    assert doc["status"] == "ready" and doc["failing"] == []
    assert doc["checks"]["database"].startswith("ok") and doc["checks"]["store"].startswith("ok")
    assert doc["checks"]["worker"] == "ok"  # the in-process worker's claim loop

    # the store loses its layout marker: not readable as a hubgate store
    (s.data_dir / "store" / "hubgate-layout").rename(s.data_dir / "layout.bak")
    broken = httpx.get(f"{s.url}/readyz")
    assert broken.status_code == 503 and broken.json()["failing"] == ["store"], broken.text
    (s.data_dir / "layout.bak").rename(s.data_dir / "store" / "hubgate-layout")

    # the schema is behind this hubgate (a restored old backup): the database part says so
    with sqlite3.connect(s.data_dir / "hubgate.db") as db:
        (head,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
        db.execute("UPDATE alembic_version SET version_num = '0002'")
    behind = httpx.get(f"{s.url}/readyz")
    assert behind.status_code == 503, behind.text
    assert behind.json()["failing"] == ["database"] and "0002" in behind.json()["checks"]["database"]
    assert httpx.get(f"{s.url}/healthz").status_code == 200  # liveness does not depend on them
    with sqlite3.connect(s.data_dir / "hubgate.db") as db:
        db.execute("UPDATE alembic_version SET version_num = ?", (head,))
    assert httpx.get(f"{s.url}/readyz").status_code == 200


def test_metrics_are_prometheus_text_labelled_by_route_template(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "metrics-data"
    env = {"HUBGATE_DATA_DIR": str(data), "HUBGATE_UPSTREAM_URL": ""}
    import os

    imported = run({**os.environ, **env}, "import", str(write_folder(tmp_path / "m", {"a.txt": b"hello\n"})),
                   "--repo", "acme/metered", "--quiet")
    assert imported.returncode == 0, imported.stderr
    s = serve(data_dir=data)
    with httpx.Client(base_url=s.url) as c:
        for _ in range(3):
            assert c.head("/acme/metered/resolve/main/a.txt").status_code == 200
        assert c.get("/acme/metered/resolve/main/a.txt").content == b"hello\n"
        assert c.get("/acme/nothing-here-1/resolve/main/x").status_code == 404
        assert c.get("/api/models/acme/metered").status_code == 200
        assert c.get("/api/models/acme/metered/tree/main").status_code == 200
        text = c.get("/metrics").text
    families = _families(text)
    requests = _samples(families, "hubgate_http_requests")
    by_route = {(lab["method"], lab["route"], lab["status"]): v for lab, v in requests}
    assert by_route[("HEAD", "/{repo}/resolve/{rev}/{path}", "200")] == 3
    assert by_route[("GET", "/{repo}/resolve/{rev}/{path}", "404")] == 1
    assert by_route[("GET", "/api/{type}s/{repo}", "200")] == 1
    assert by_route[("GET", "/api/{type}s/{repo}/tree", "200")] == 1
    assert not any("acme" in lab["route"] for lab, _ in requests), "a raw path became a label"
    latency = _samples(families, "hubgate_http_request_duration_seconds")
    assert any(lab.get("le") == "+Inf" and lab["method"] == "HEAD" and v == 3 for lab, v in latency)
    served = dict((lab["mode"], v) for lab, v in _samples(families, "hubgate_served_bytes"))
    assert served["local"] == 6  # the GET's body
    lookups = {(lab["cache"], lab["result"]): v for lab, v in _samples(families, "hubgate_metadata_cache_lookups")}
    assert lookups[("snapshot", "hit")] >= 2
    assert dict((lab["state"], v) for lab, v in _samples(families, "hubgate_snapshots"))["available"] == 1
    for name in ("hubgate_job_queue_depth", "hubgate_job_queue_oldest_age_seconds", "hubgate_sync_bytes",
                 "hubgate_upstream_retries", "hubgate_scrub_blobs", "hubgate_last_scrub_timestamp_seconds",
                 "hubgate_mirror_requests", "hubgate_jobs", "hubgate_database_up"):
        assert name in families, name
    info = _samples(families, "hubgate_build_info")
    assert info[0][0]["version"] == "0.1.0" and info[0][1] == 1

    # a verify run shows in the scrub metrics (read from its audit entry)
    verified = run(s.env, "verify", "--quiet")
    assert verified.returncode == 0, verified.stderr
    import time

    time.sleep(5.5)  # the database part of a scrape is cached 5 s
    families = _families(httpx.get(f"{s.url}/metrics").text)
    assert _samples(families, "hubgate_last_scrub_timestamp_seconds")[0][1] > 0


def test_json_logs_one_object_per_line_with_an_access_line_per_request(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s = serve(log_format="JSON", log_level="INFO")  # any case
    admin = s.cli("--local", "token", "create", "--role", "admin", "--name", "ops-alice")
    assert admin.returncode == 0, admin.stderr
    secret = admin.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {secret}", "X-Request-Id": "trace-me-42"}
    assert httpx.get(f"{s.url}/registry/v1/requests", headers=headers).status_code == 200
    assert httpx.head(f"{s.url}/acme/none/resolve/main/x", headers=headers).status_code == 404
    s.stop()
    lines = [line for line in s.log().splitlines() if line.strip()]
    docs = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message", "request_id"} <= d.keys() for d in docs)
    access = [d for d in docs if d["logger"] == "hubgate.access"]
    mine = next(d for d in access if d["request_id"] == "trace-me-42" and d["route"] == "/registry/v1/requests")
    assert (mine["method"], mine["status"]) == ("GET", 200) and mine["bytes"] > 0 and mine["duration_ms"] >= 0
    assert mine["actor"].startswith("ops-alice(")
    head = next(d for d in access if d["route"] == "/{repo}/resolve/{rev}/{path}")
    assert head["status"] == 404 and head["request_id"] == "trace-me-42"
    assert secret not in s.log(), "a token reached the log"
    assert any(d["logger"].startswith("uvicorn") for d in docs)  # uvicorn's lines are JSON too
    assert any(d["logger"].startswith("alembic") for d in docs)  # a fresh database: the migration is logged


def test_log_level_error_silences_info_and_alembic_is_quiet_without_a_migration(serve, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import os

    env = {**os.environ, "HUBGATE_DATA_DIR": str(tmp_path / "quiet"), "HUBGATE_UPSTREAM_URL": "", "HUBGATE_LOG_LEVEL": "ERROR"}
    first = run(env, "requests")
    assert first.returncode == 0, first.stderr
    assert first.stderr == "", first.stderr  # not even the migration of a new database at level error
    second = run({**env, "HUBGATE_LOG_LEVEL": "info"}, "requests")
    assert second.returncode == 0 and "alembic" not in second.stderr, second.stderr  # nothing to migrate: silent
    s = serve(data_dir=tmp_path / "quiet", log_level="error")
    assert httpx.get(f"{s.url}/readyz").status_code == 200
    s.stop()
    assert " INFO " not in s.log() and "Uvicorn running" not in s.log(), s.log()
