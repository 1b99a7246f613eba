"""Two ``hubgate serve`` processes on one PostgreSQL are two replicas: a token revoked (or a repo gated)
through one is refused by the other within a second; and the rate limits, met by a real server process."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fakes.fake_hub import FakeHub
from huggingface_hub import snapshot_download

from .conftest import PostgresServer, ServeProcess, cli, model_files, unique_repo

pytestmark = pytest.mark.integration


def _bootstrap(env: dict[str, str]) -> str:
    proc = cli(env, "token", "create", "--role", "admin", "--name", "root")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _refused_within(server: ServeProcess, check: Callable[[httpx.Client], bool], started: float,
                    limit: float = 3.0) -> float:
    """Poll ``check`` against ``server`` until it holds; return the seconds since ``started``."""
    with httpx.Client(base_url=server.url, timeout=5) as client:
        while not check(client):
            if time.monotonic() - started > limit:
                raise AssertionError(f"{server.name} still accepted after {limit}s")
            time.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
def replicas(postgres_server: PostgresServer, fake_hub: FakeHub, tmp_path: Path,
             serve_process: Callable[..., ServeProcess]) -> tuple[ServeProcess, ServeProcess, str, dict[str, str]]:
    env = {
        "HUBGATE_DATABASE_URL": postgres_server.create_database(),
        "HUBGATE_DATA_DIR": str(tmp_path / "shared"),  # one store and one instance key, as replicas share
        "HUBGATE_UPSTREAM_URL": fake_hub.url,
        "HUBGATE_UPSTREAM_ALLOW_PRIVATE": "true",  # the fake Hub is on loopback
        "HUBGATE_WORKER_IN_PROCESS": "false",
        "HUBGATE_LOG_LEVEL": "warning",
    }
    admin = _bootstrap(env)
    return serve_process("a", env), serve_process("b", env), admin, env


def test_a_token_revoked_through_one_replica_is_refused_by_the_other_within_a_second(replicas) -> None:  # type: ignore[no-untyped-def]
    a, b, admin, _ = replicas
    with httpx.Client(base_url=a.url, timeout=30) as ca, httpx.Client(base_url=b.url, timeout=30) as cb:
        r = ca.post("/registry/v1/tokens", json={"name": "gpu-nodes", "role": "reader"}, headers=_auth(admin))
        assert r.status_code == 201, r.text
        token, token_id = r.json()["token"], r.json()["token_id"]
        for client in (ca, cb):  # known (and cached) by both
            assert client.get("/registry/v1/requests", headers=_auth(token)).status_code == 200
            assert client.get("/api/whoami-v2", headers=_auth(token)).json()["name"] == "gpu-nodes"
        started = time.monotonic()
        assert ca.delete(f"/registry/v1/tokens/{token_id}", headers=_auth(admin)).status_code == 200
        assert ca.get("/registry/v1/requests", headers=_auth(token)).status_code == 401  # at once, here
    elapsed = _refused_within(
        b, lambda c: c.get("/registry/v1/requests", headers=_auth(token)).status_code == 401, started)
    assert elapsed < 1.0, f"replica b refused the revoked token only after {elapsed:.2f}s"


def test_a_repo_gated_through_one_replica_is_gated_on_the_other_within_a_second(replicas, tiny_folder: Path,  # type: ignore[no-untyped-def]
                                                                               tmp_path: Path) -> None:
    a, b, admin, env = replicas
    repo = unique_repo("replicated")
    proc = cli(env, "import", str(tiny_folder), "--repo", repo)
    assert proc.returncode == 0, proc.stderr
    url = f"/{repo}/resolve/main/config.json"
    with httpx.Client(base_url=b.url) as cb:
        assert cb.head(url).status_code == 200
    started = time.monotonic()
    with httpx.Client(base_url=a.url) as ca:
        r = ca.put(f"/registry/v1/repos/model/{repo}/visibility", json={"visibility": "gated"}, headers=_auth(admin))
        assert r.status_code == 200, r.text
        assert ca.head(url).headers.get("x-error-code") == "GatedRepo"
    elapsed = _refused_within(b, lambda c: c.head(url).headers.get("x-error-code") == "GatedRepo", started)
    assert elapsed < 1.0, f"replica b served the gated repo for {elapsed:.2f}s"
    # Admins still read it, on both.
    for server in (a, b):
        assert httpx.head(f"{server.url}{url}", headers=_auth(admin)).status_code == 200


def test_a_thousand_random_tokens_from_one_address_meet_a_429(replicas) -> None:  # type: ignore[no-untyped-def]
    a, b, admin, _ = replicas
    statuses: list[int] = []
    started = time.monotonic()
    with httpx.Client(base_url=a.url, timeout=30) as client:
        for _ in range(1000):
            token = f"hg_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
            r = client.get("/registry/v1/requests", headers=_auth(token))
            statuses.append(r.status_code)
            if r.status_code == 429:
                retry_after = int(r.headers["retry-after"])
                break
    assert statuses[-1] == 429, statuses[-5:]
    refilled = time.monotonic() - started  # the budget (60 a minute) refills one a second meanwhile
    assert set(statuses[:-1]) == {401} and 60 <= len(statuses) - 1 <= 61 + refilled, (len(statuses), refilled)
    assert 1 <= retry_after <= 60
    with httpx.Client(base_url=a.url) as client:  # the Hub API refuses that address too, until it refills
        r = client.get("/api/models", headers=_auth(f"hg_{secrets.token_hex(8)}_x"))
        assert r.status_code == 429 and r.headers["retry-after"]
    # Budgets are per replica; and a token already known here still works.
    assert httpx.get(f"{b.url}/registry/v1/requests", headers=_auth(admin)).status_code == 200


def test_a_hundred_mirror_requests_from_one_token_meet_a_429(replicas, fake_hub: FakeHub,  # type: ignore[no-untyped-def]
                                                             tiny_files: dict[str, bytes]) -> None:
    a, _, admin, _ = replicas
    repo = unique_repo("many")
    fake_hub.create_repo(repo, model_files(tiny_files))
    with httpx.Client(base_url=a.url, timeout=60) as client:
        token = client.post("/registry/v1/tokens", json={"name": "eager", "role": "requester"},
                            headers=_auth(admin)).json()["token"]
        statuses = []
        for _ in range(100):
            r = client.post("/registry/v1/requests", json={"repo_id": repo, "revision": "main"}, headers=_auth(token))
            statuses.append(r.status_code)
            if r.status_code == 429:
                break
        assert statuses[-1] == 429 and set(statuses[:-1]) == {201} and len(statuses) - 1 == 60, statuses
        assert int(r.headers["retry-after"]) >= 1
        # Another token is not affected.
        assert client.post("/registry/v1/requests", json={"repo_id": repo}, headers=_auth(admin)).status_code == 201


def test_default_limits_never_slow_a_snapshot_download_of_a_thousand_files(
        make_hubgate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from api.ratelimit import RateLimitedError
    from mirror.importer import import_folder
    from registry.types import RepoRef

    hubgate = make_hubgate(tree_page_size=1000)  # the default limits
    reads, refused = [], []
    real = hubgate.svc.limits.hub_read

    def counting(address, token_id):  # type: ignore[no-untyped-def]
        reads.append(token_id)
        try:
            real(address, token_id)
        except RateLimitedError:  # the HF client would retry a 429 after a pause: count them, not failures
            refused.append(address)
            raise

    monkeypatch.setattr(hubgate.svc.limits, "hub_read", counting)
    folder = tmp_path / "thousand"
    for i in range(1000):
        (folder / f"d{i % 10}").mkdir(parents=True, exist_ok=True)
        (folder / f"d{i % 10}" / f"f{i:04d}.txt").write_text(f"file {i}\n")
    repo = unique_repo("thousand")
    import_folder(hubgate.svc.engine, hubgate.svc.store, folder, RepoRef.parse("model", repo), refs=["main"])
    reader = hubgate.create_token("reader", "puller")
    out = Path(snapshot_download(repo, endpoint=hubgate.url, cache_dir=tmp_path / "hf", token=reader, max_workers=8))
    assert len([p for p in out.rglob("*") if p.is_file()]) == 1000
    assert len(reads) >= 2000 and refused == []  # a HEAD and a GET per file, none of them refused
