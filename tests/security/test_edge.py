"""The HTTP edge of a real ``hubgate serve`` (raw sockets on 127.0.0.1): header-block cap (431),
slow-header timeout (408 and close), Host allowlist (400 before routing), X-Request-Id, body caps (413),
unknown fields (422)."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable

import httpx
import psutil
import pytest

from .conftest import REPO, Served, header, raw, read_response, status_of

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def get(path: str, host: str, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", *extra, "Connection: close", "", ""]
    return "\r\n".join(lines).encode()


# ---------------------------------------------------------------- header block size


def test_a_header_block_over_the_cap_is_answered_431(server: Served) -> None:
    big = get("/healthz", "127.0.0.1", "X-Big: " + "b" * (100 * 1024))
    response = raw(server.port, big)
    assert status_of(response) == 431, response[:300]
    assert b"65536" in response  # the answer names the cap
    just_under = get("/healthz", "127.0.0.1", "X-Big: " + "b" * (60 * 1024))
    assert status_of(raw(server.port, just_under)) == 200


def test_an_unfinished_header_flood_is_cut_off_at_the_cap_without_growing_the_server(server: Served) -> None:
    proc = psutil.Process(server.proc.pid)
    rss_before = proc.memory_info().rss
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Flood: ")
        chunk = b"a" * MiB
        try:
            while sent < 256 * MiB:  # bounded: stops at 256 MiB or when the server closes
                s.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        answer = read_response(s, timeout=5)
    assert sent < 16 * MiB, f"the server kept reading an unfinished header block ({sent // MiB} MiB)"
    assert answer == b"" or status_of(answer) == 431, answer[:200]
    grown = proc.memory_info().rss - rss_before
    assert grown < 32 * MiB, f"server grew by {grown // MiB} MiB"
    assert status_of(raw(server.port, get("/healthz", "127.0.0.1"))) == 200


# ---------------------------------------------------------------- slow headers


def test_a_client_trickling_its_headers_is_cut_off_at_the_header_timeout(server: Served) -> None:
    started = time.monotonic()
    closed_after = None
    answer = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        s.settimeout(0.25)
        while time.monotonic() - started < 15:  # bounded; the header timeout of this server is 2 s
            try:
                s.sendall(b"a")
                data = s.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
            answer += data
            if not data:
                closed_after = time.monotonic() - started
                break
    assert closed_after is not None, "the trickling connection was never closed"
    assert 1.0 <= closed_after <= 6, closed_after  # the server's header timeout is 2 s (closes after 1.5-2 s)
    assert answer == b"" or status_of(answer) == 408, answer[:200]


def test_a_connection_that_never_sends_a_byte_is_closed(server: Served) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        assert s.recv(100) == b""  # closed by the server (a timeout here fails the test)
    assert time.monotonic() - started <= 8


def test_a_request_that_completes_its_headers_in_time_is_served(server: Served) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"Connection: close\r\n\r\n"):
            s.sendall(piece)
            time.sleep(0.4)
        assert status_of(read_response(s)) == 200


# ---------------------------------------------------------------- Host allowlist


@pytest.mark.parametrize("path", ["/healthz", "/api/models", f"/{REPO}/resolve/main/config.json",
                                  f"/api/models/{REPO}/tree/main", "/registry/v1/requests"])
def test_a_host_off_the_allowlist_is_refused_400_on_every_route(server: Served, path: str) -> None:
    response = raw(server.port, get(path, "evil.example"))
    assert status_of(response) == 400, response[:300]
    body = json.loads(response.partition(b"\r\n\r\n")[2])
    assert "evil.example" in body["error"] and "HUBGATE_ALLOWED_HOSTS" in body["error"]
    assert header(response, "x-request-id")
    assert b"evil.example" not in response.partition(b"\r\n\r\n")[0]  # never echoed into a header (Link)


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "127.0.0.1", "LOCALHOST:{port}", "[::1]:{port}"])
def test_the_default_allowlist_serves_the_bind_address_and_loopback_names(server: Served, host: str) -> None:
    response = raw(server.port, get(f"/{REPO}/resolve/main/config.json", host.format(port=server.port)))
    assert status_of(response) == 200, response[:300]


def test_another_port_on_an_allowed_name_is_refused(server: Served) -> None:
    assert status_of(raw(server.port, get("/healthz", f"127.0.0.1:{server.port + 1}"))) == 400


def test_pagination_links_use_only_the_allowed_host(server: Served) -> None:
    path = f"/api/models/{REPO}/tree/main"
    ok = raw(server.port, get(path, f"localhost:{server.port}", "X-Forwarded-Host: evil.example"))
    assert status_of(ok) == 200
    link = header(ok, "link")
    assert link is not None and link.startswith(f"<http://localhost:{server.port}{path}?"), link
    refused = raw(server.port, get(path, "evil.example"))
    assert status_of(refused) == 400 and header(refused, "link") is None
    assert b"evil.example" not in ok


def test_configured_allowed_hosts_and_public_url(serve: Callable[..., Served]) -> None:
    s = serve(allowed_hosts="hubgate.internal,mirror.example:8443,*.gpu.example", public_url="https://models.example.org",
              tree_page_size=1)
    path = f"/api/models/{REPO}/tree/main"
    for host, expect in (("hubgate.internal", 200), (f"hubgate.internal:{s.port}", 200), ("mirror.example:8443", 200),
                         ("mirror.example", 400), ("models.example.org", 200), ("models.example.org:443", 200),
                         ("node-7.gpu.example:8080", 200), ("gpu.example", 400), ("evilgpu.example", 400),
                         (f"127.0.0.1:{s.port}", 400), ("evil.example", 400)):
        response = raw(s.port, get(path, host))
        assert status_of(response) == expect, (host, response[:200])
        if expect == 200:  # links come from HUBGATE_PUBLIC_URL whatever the Host
            assert header(response, "link").startswith(f"<https://models.example.org{path}?")  # type: ignore[union-attr]


# ---------------------------------------------------------------- X-Request-Id


def test_every_answer_carries_a_request_id_and_a_well_formed_client_id_is_kept(server: Served) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        ids = set()
        for path in ("/healthz", f"/{REPO}/resolve/main/config.json", f"/{REPO}/resolve/main/nope.txt",
                     "/api/models", f"/api/models/{REPO}", "/registry/v1/requests"):
            for method in ("GET", "HEAD"):
                r = c.request(method, path)
                rid = r.headers.get("x-request-id")
                assert rid and re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", rid), (method, path, r.status_code)
                ids.add(rid)
        assert len(ids) == 12  # a new one each time
        assert c.head(f"/{REPO}/resolve/main/config.json",
                      headers={"X-Request-Id": "job-42.node-7:a_b"}).headers["x-request-id"] == "job-42.node-7:a_b"
        for bad in (b"has spaces", b"x" * 129, b"semi;colon", "\u00e9".encode(), b""):
            got = c.get("/healthz", headers={"X-Request-Id": bad}).headers["x-request-id"]
            assert got.encode() != bad and re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", got)


def test_a_failed_request_is_logged_with_its_request_id(serve: Callable[..., Served]) -> None:
    s = serve()
    blobs = list((s.data_dir / "store" / "blobs").rglob("*"))
    for blob in [b for b in blobs if b.is_file()]:
        blob.chmod(0o644)
        blob.unlink()  # every blob lost: the snapshot cannot be served
    with httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.get(f"/{REPO}/resolve/main/config.json", headers={"X-Request-Id": "trace-503-check"})
    assert r.status_code == 503 and r.headers["x-request-id"] == "trace-503-check"
    def failed() -> list[str]:
        return [line for line in s.log if " ERROR " in line and "/resolve/main/config.json" in line]

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not failed():
        time.sleep(0.05)
    assert failed() and all("[trace-503-check]" in line for line in failed()), s.log_text()[-3000:]


# ---------------------------------------------------------------- bodies


def test_admin_bodies_over_64_kib_are_refused_413(server: Served) -> None:
    body = json.dumps({"repo_id": "acme/x", "reason": "r" * (70 * 1024)}).encode()
    with httpx.Client(base_url=server.url, timeout=10) as c:
        auth = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
        r = c.post("/registry/v1/requests", content=body, headers=auth)
        assert r.status_code == 413 and "65536" in r.json()["message"], r.text

        def chunks():  # no Content-Length: counted as it arrives
            for i in range(0, len(body), 8192):
                yield body[i:i + 8192]

        r = c.post("/registry/v1/requests", content=chunks(), headers=auth)
        assert r.status_code == 413 and "65536" in r.text
        assert r.headers["x-request-id"]
        # a body under the cap reaches the route (which validates it)
        assert c.post("/registry/v1/requests", json={"repo_id": "bad id!"}, headers=auth).status_code in (400, 422)


def test_paths_info_bodies_over_4_mib_are_refused_413(server: Served) -> None:
    form = ("paths=" + "a" * 1000 + "&") * 4300
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post(f"/api/models/{REPO}/paths-info/main", content=form.encode(),
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413 and str(4 * MiB) in r.json()["error"]
        ok = c.post(f"/api/models/{REPO}/paths-info/main", data={"paths": ["config.json"]})
        assert ok.status_code == 200 and [e["path"] for e in ok.json()] == ["config.json"]


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/registry/v1/requests", {"repo_id": "acme/x", "revision": "main", "upstream_url": "http://169.254.169.254/"}),
    ("POST", "/registry/v1/tokens", {"name": "x", "role": "reader", "is_admin": True}),
    ("POST", "/registry/v1/requests/1/reject", {"reason": "no", "state": "available"}),
    ("PUT", f"/registry/v1/repos/model/{REPO}/refs/main", {"commit": "0" * 40, "force": True}),
])
def test_admin_bodies_with_unknown_fields_are_refused_422(server: Served, method: str, path: str, body: dict) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as c:
        r = c.request(method, path, json=body, headers={"Authorization": f"Bearer {server.token}"})
    assert r.status_code == 422, r.text
    assert "extra" in r.text.lower() or "not permitted" in r.text.lower()


def test_the_request_id_reaches_the_audit_entry_of_an_admin_action(server: Served) -> None:
    with httpx.Client(base_url=server.url, timeout=10, headers={"Authorization": f"Bearer {server.token}"}) as c:
        r = c.post("/registry/v1/tokens", json={"name": "audited", "role": "reader"},
                   headers={"X-Request-Id": "audit-trace-7"})
        assert r.status_code == 201 and r.headers["x-request-id"] == "audit-trace-7"
        events = c.get("/registry/v1/audit", params={"limit": 20}).json()
    assert any(e.get("request_id") == "audit-trace-7" for e in events), events
