"""Upstream safety (SSRF): the upstream URL is checked at config load; the fetcher follows redirects only
to the upstream's origin and the allowlisted hosts, and connects only to addresses the rules allow,
whatever DNS answers; a file of another commit fails the sync. A listening canary socket proves that
a refused target never sees a connection."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.fake_hub import FakeHub
from fakes.server import ServerThread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.settings import ConfigError, load
from mirror.egress import (
    EgressError,
    EgressPolicy,
    address_class,
    normalize_host,
    parse_target,
)
from mirror.upstream import HubUpstream, UpstreamError, UpstreamRefusedError
from registry.types import RepoRef, RepoType

from .conftest import Canary, clean_env, run_cli

COMMIT = "c" * 40
OTHER = "d" * 40
REPO = RepoRef(RepoType.MODEL, "acme/evil")
PRIVATE_OK = EgressPolicy(allow_private=True)  # the test upstream itself is on loopback


class EvilUpstream:
    """A loopback 'Hub' whose resolve answers are set by the test: a redirect, or bytes with some X-Repo-Commit."""

    def __init__(self) -> None:
        self.location: str | None = None
        self.repo_commit = COMMIT
        self.app = Starlette(routes=[Route("/{rest:path}", self._any, methods=["GET", "HEAD"])])
        self.server = ServerThread(self.app, name="evil-upstream")

    async def _any(self, request: Request) -> Response:
        headers = {"X-Repo-Commit": self.repo_commit}
        if self.location is not None:
            return Response(status_code=302, headers={**headers, "Location": self.location})
        return Response(b"hello", headers=headers)


@pytest.fixture
def evil() -> Iterator[EvilUpstream]:
    e = EvilUpstream()
    e.server.start()
    try:
        yield e
    finally:
        e.server.stop()


def fetch(upstream: HubUpstream) -> bytes:
    with upstream.open(REPO, COMMIT, "weights.bin") as chunks:
        return b"".join(chunks)


def settle(canary: Canary) -> int:
    time.sleep(0.3)  # let the accept loop see anything that got through
    return canary.connections


# ---------------------------------------------------------------- redirects


@pytest.mark.parametrize("target", [
    "http://127.0.0.1:{port}/latest/meta-data/",
    "http://localhost:{port}/latest/meta-data/",
    "http://127.1:{port}/latest/meta-data/",
    "http://0x7f000001:{port}/latest/meta-data/",
    "http://2130706433:{port}/latest/meta-data/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://user@127.0.0.1:{port}/",
    "file:///etc/passwd",
])
def test_a_redirect_off_the_allowlist_is_refused_and_the_canary_sees_no_connection(
        evil: EvilUpstream, canary: Canary, target: str) -> None:
    evil.location = target.format(port=canary.port)
    upstream = HubUpstream(evil.server.url, egress=PRIVATE_OK, max_retries=0)
    try:
        with pytest.raises(UpstreamRefusedError, match="refused"):
            fetch(upstream)
    finally:
        upstream.close()
    assert settle(canary) == 0


def test_a_redirect_to_an_allowlisted_host_is_followed(evil: EvilUpstream, canary: Canary) -> None:
    """The control for the canary tests: the same redirect to a host named on the allowlist reaches it."""
    evil.location = f"http://127.0.0.1:{canary.port}/cdn/blob"
    upstream = HubUpstream(evil.server.url, max_retries=0,
                           egress=EgressPolicy(redirect_hosts=(f"127.0.0.1:{canary.port}",), allow_private=True))
    try:
        with pytest.raises(UpstreamError, match="unreachable"):  # the canary hangs up without an answer
            fetch(upstream)
    finally:
        upstream.close()
    assert settle(canary) >= 1


def test_loopback_redirect_hosts_need_allow_private(evil: EvilUpstream, canary: Canary) -> None:
    evil.location = f"http://127.0.0.1:{canary.port}/cdn/blob"
    policy = EgressPolicy(redirect_hosts=(f"127.0.0.1:{canary.port}",), allow_private=False)
    # the upstream itself is on loopback too: refused before anything is sent
    with pytest.raises(UpstreamRefusedError, match="loopback"):
        fetch(HubUpstream(evil.server.url, egress=policy, max_retries=0))
    assert settle(canary) == 0


def test_too_many_redirects_stop(evil: EvilUpstream) -> None:
    evil.location = evil.server.url + "/again"  # its own origin, forever
    upstream = HubUpstream(evil.server.url, egress=PRIVATE_OK, max_retries=0)
    with pytest.raises(UpstreamError, match="Too many redirects"):
        fetch(upstream)
    upstream.close()


# ---------------------------------------------------------------- DNS: the address connected to is the one checked


def _addrinfo(ip: str, port: Any) -> list[tuple[Any, ...]]:
    """What getaddrinfo answers for ``ip`` (built here: the suite's resolver guard refuses non-loopback names)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    return [(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, int(port or 0)))]


def _resolving(monkeypatch: pytest.MonkeyPatch, answers: dict[str, str]) -> list[str]:
    """getaddrinfo answering ``answers`` for those names (as a rebinding DNS server would); asked names are logged."""
    real, asked = socket.getaddrinfo, []

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        asked.append(name)
        if name in answers:
            return _addrinfo(answers[name], port)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return asked


def test_an_allowlisted_cdn_name_that_resolves_to_loopback_is_refused_at_connect_time(
        evil: EvilUpstream, canary: Canary, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even on a tiered mirror (private addresses allowed for named hosts), a ``*.`` pattern never reaches one."""
    asked = _resolving(monkeypatch, {"cdn-lfs.huggingface.co": "127.0.0.1"})
    evil.location = f"http://cdn-lfs.huggingface.co:{canary.port}/repos/x/y"  # on the default allowlist (*.huggingface.co)
    upstream = HubUpstream(evil.server.url, egress=PRIVATE_OK, max_retries=0)
    try:
        with pytest.raises(UpstreamRefusedError, match=r"cdn-lfs\.huggingface\.co resolves to 127\.0\.0\.1"):
            fetch(upstream)
    finally:
        upstream.close()
    assert "cdn-lfs.huggingface.co" in asked  # resolved when connecting ...
    assert settle(canary) == 0  # ... and never connected to


def test_the_connection_goes_to_the_address_that_was_checked(
        evil: EvilUpstream, canary: Canary, monkeypatch: pytest.MonkeyPatch) -> None:
    """One lookup per connection, and the connection is made to that address: a second answer (rebinding
    to a metadata address) is never asked for. A forbidden first answer is refused outright."""
    evil.location = f"http://cdn.internal:{canary.port}/x"
    answers = ["127.0.0.1", "169.254.169.254"]
    real, asked = socket.getaddrinfo, []

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "cdn.internal":
            asked.append(answers[0])
            return _addrinfo(answers.pop(0), port)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    policy = EgressPolicy(redirect_hosts=(f"cdn.internal:{canary.port}",), allow_private=True)
    upstream = HubUpstream(evil.server.url, egress=policy, max_retries=0)
    try:
        with pytest.raises(UpstreamError, match="unreachable"):  # the canary hangs up without an answer
            fetch(upstream)
        assert asked == ["127.0.0.1"] and settle(canary) == 1
        with pytest.raises(UpstreamRefusedError, match="169.254.169.254, a link-local/metadata address"):
            fetch(upstream)
    finally:
        upstream.close()
    assert settle(canary) == 1


# ---------------------------------------------------------------- commits


def test_an_upstream_file_of_another_commit_is_refused_naming_both(evil: EvilUpstream) -> None:
    evil.repo_commit = OTHER
    upstream = HubUpstream(evil.server.url, egress=PRIVATE_OK, max_retries=0)
    with pytest.raises(UpstreamRefusedError, match=f"{OTHER}.*{COMMIT}"):
        fetch(upstream)
    evil.repo_commit = COMMIT
    assert fetch(upstream) == b"hello"
    upstream.close()


# ---------------------------------------------------------------- whole syncs through hubgate


def _sync(upstream: FakeHub, data_dir: Path, repo: str, **settings: object) -> dict[str, Any]:
    """Request, approve and sync ``repo`` on a fresh hubgate (one attempt per file); the request after."""
    from api.admin.routes import submit_request
    from api.app import build_services
    from mirror.sync import Syncer, SyncOptions
    from mirror.worker import Worker
    from registry import workflow
    from registry.audit import Actor
    from registry.db import session_scope

    svc = build_services(load(environ={
        "HUBGATE_DATA_DIR": str(data_dir), "HUBGATE_UPSTREAM_URL": upstream.url, "HUBGATE_WORKER_IN_PROCESS": "false",
        "HUBGATE_UPSTREAM_ALLOW_PRIVATE": "true", **{f"HUBGATE_{k.upper()}": str(v) for k, v in settings.items()}}))
    try:
        actor = Actor("security-test", "admin", "test")
        req = submit_request(svc, "model", repo, "main", None, None, "ssrf test", actor)
        with session_scope(svc.engine) as session:
            workflow.approve(session, req.pk, actor)
        syncer = Syncer(svc.engine, svc.store, svc.upstream, SyncOptions(resume_attempts=0), signer=svc.signer)
        Worker(svc.engine, syncer).run_once()
        with session_scope(svc.engine) as session:
            r = workflow.get(session, req.pk)
            return {"state": r.state, "error": r.error or ""}
    finally:
        svc.close()
        svc.engine.dispose()


@pytest.fixture
def fake_hub_factory() -> Iterator[Callable[..., FakeHub]]:
    started: list[FakeHub] = []

    def make(wrap: Callable[[Any], Any] | None = None) -> FakeHub:
        hub = FakeHub(page_size=3)
        if wrap is not None:
            hub.hub_app = wrap(hub.hub_app)  # type: ignore[assignment]
        started.append(hub.start())
        return hub

    yield make
    for hub in started:
        hub.stop()


def test_a_sync_whose_cdn_redirect_points_at_a_metadata_canary_fails_without_touching_it(
        fake_hub_factory: Callable[..., FakeHub], canary: Canary, tmp_path: Path) -> None:
    hub = fake_hub_factory()
    hub.create_repo("acme/weights", {"README.md": b"---\nlicense: mit\n---\n", "w.bin": b"\0" * 2048}, lfs=["w.bin"])
    hub.cdn_url = f"http://127.0.0.1:{canary.port}/latest/meta-data"  # its LFS answers now redirect there
    result = _sync(hub, tmp_path / "hg", "acme/weights")
    assert result["state"] == "failed", result
    assert "HUBGATE_UPSTREAM_REDIRECT_HOSTS" in result["error"], result
    assert settle(canary) == 0


def test_a_sync_whose_upstream_answers_another_commit_fails_naming_both(
        fake_hub_factory: Callable[..., FakeHub], tmp_path: Path) -> None:
    def lying(inner: Any) -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            async def send_other(message: Any) -> None:
                if message["type"] == "http.response.start" and "/resolve/" in scope.get("path", ""):
                    message["headers"] = [(k, OTHER.encode() if k.lower() == b"x-repo-commit" else v)
                                          for k, v in message["headers"]]
                await send(message)
            await inner(scope, receive, send_other)
        return app

    hub = fake_hub_factory(lying)
    commit = hub.create_repo("acme/moved", {"README.md": b"---\nlicense: mit\n---\n", "notes.txt": b"x\n"})
    result = _sync(hub, tmp_path / "hg", "acme/moved")
    assert result["state"] == "failed", result
    assert OTHER in result["error"] and commit.sha in result["error"], result


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(("url", "words"), [
    ("https://huggingface.co@evil.example/", "user name or password"),
    ("http://127.1/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://localhost:8000/", "loopback"),
    ("http://169.254.169.254/", "link-local"),
    ("http://[fd00:ec2::254]/", "link-local"),
    ("http://10.1.2.3/", "private"),
    ("ftp://huggingface.co/", "http"),
])
def test_unsafe_upstream_urls_are_refused_at_config_load(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match="HUBGATE_UPSTREAM_URL") as info:
        load(environ={"HUBGATE_UPSTREAM_URL": url})
    assert words in str(info.value)


def test_a_tiered_upstream_on_loopback_needs_allow_private_and_numeric_forms_are_normalised() -> None:
    for url in ("http://127.1:8080/", "http://0x7f000001:8080", "http://2130706433:8080/", "http://0177.0.0.1:8080"):
        assert load(environ={"HUBGATE_UPSTREAM_URL": url, "HUBGATE_UPSTREAM_ALLOW_PRIVATE": "true"}).upstream_url \
            == "http://127.0.0.1:8080"
    with pytest.raises(ConfigError):  # link-local stays refused even then
        load(environ={"HUBGATE_UPSTREAM_URL": "http://169.254.169.254/", "HUBGATE_UPSTREAM_ALLOW_PRIVATE": "true"})
    assert load(environ={}).upstream_url == "https://huggingface.co"


def test_serve_exits_2_naming_the_setting(tmp_path: Path) -> None:
    env = clean_env(data_dir=tmp_path, upstream_url="https://huggingface.co@evil.example/")
    done = run_cli(env, "serve", "--port", "0", timeout=60)
    assert done.returncode == 2, done.stderr
    assert "HUBGATE_UPSTREAM_URL" in done.stderr


# ---------------------------------------------------------------- the rules themselves


@pytest.mark.parametrize(("host", "normal"), [
    ("127.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"), ("CDN-LFS.HuggingFace.co.", "cdn-lfs.huggingface.co"), ("[::1]", "::1"),
])
def test_numeric_and_odd_host_spellings_are_normalised(host: str, normal: str) -> None:
    assert normalize_host(host) == normal


@pytest.mark.parametrize(("ip", "kind"), [
    ("8.8.8.8", "public"), ("2606:4700::1111", "public"), ("127.0.0.1", "private"), ("::1", "private"),
    ("10.0.0.1", "private"), ("192.168.1.1", "private"), ("100.64.0.1", "private"), ("fd12:3456::1", "private"),
    ("::ffff:127.0.0.1", "private"), ("::ffff:169.254.169.254", "forbidden"), ("64:ff9b::a9fe:a9fe", "forbidden"),
    ("169.254.169.254", "forbidden"), ("fe80::1", "forbidden"), ("fd00:ec2::254", "forbidden"), ("0.0.0.0", "forbidden"),
    ("224.0.0.1", "forbidden"), ("240.0.0.1", "forbidden"),
])
def test_address_classes(ip: str, kind: str) -> None:
    assert address_class(ipaddress.ip_address(ip)) == kind


def test_default_redirect_hosts_cover_the_hubs_cdn_and_nothing_else() -> None:
    policy, origin = EgressPolicy(), parse_target("https://huggingface.co")
    for url in ("https://cdn-lfs.huggingface.co/repos/a/b", "https://cdn-lfs-us-1.hf.co/x", "https://us.aws.cdn.hf.co/x",
                "https://cas-bridge.xethub.hf.co/x", "https://huggingface.co/api/models/a/b"):
        policy.check_url(url, origin)
    for url in ("https://evil.example/", "https://huggingface.co.evil.example/", "https://evilhf.co/",
                "http://huggingface.co/x", "https://user:pw@cdn-lfs.huggingface.co/", "gopher://hf.co/"):
        with pytest.raises(EgressError):
            policy.check_url(url, origin)


def test_this_instance_itself_is_never_a_target() -> None:
    settings = load(environ={"HUBGATE_PORT": "8080", "HUBGATE_PUBLIC_URL": "https://models.example.org",
                             "HUBGATE_UPSTREAM_URL": "http://127.0.0.1:9000", "HUBGATE_UPSTREAM_ALLOW_PRIVATE": "true",
                             "HUBGATE_UPSTREAM_REDIRECT_HOSTS": "models.example.org,127.0.0.1:8080"})
    policy, origin = settings.upstream_egress, parse_target("http://127.0.0.1:9000")
    with pytest.raises(EgressError, match="this hubgate"):
        policy.check_url("https://models.example.org/x", origin)
    with pytest.raises(EgressError, match="this hubgate"):
        policy.check_url("http://127.0.0.1:8080/x", origin)
    with pytest.raises(EgressError, match="this hubgate"):
        policy.check_address("anything.internal", 8080, ipaddress.ip_address("127.0.0.1"), origin)
    policy.check_address("127.0.0.1", 9000, ipaddress.ip_address("127.0.0.1"), origin)  # the upstream itself
