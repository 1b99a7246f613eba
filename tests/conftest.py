"""Shared fixtures: the fixture repos (built once per session) and live hubgate servers.

Three server flavours, each a real uvicorn on 127.0.0.1 with an OS-assigned port, session-scoped:

* ``hubgate_local``       local-disk store
* ``hubgate_s3_redirect`` S3 store (moto's ThreadedMotoServer over real HTTP), LFS files answered
                          with a 302 to a presigned URL on the moto origin
* ``hubgate_s3_proxy``    the same S3 setup, every byte streamed through hubgate
* ``hubgate_s3_redirect_rgw``, ``hubgate_s3_proxy_rgw``: the same two over Ceph RGW, a real S3 server
                          (``rgw_s3``: one cluster per test run, see tests/helpers/rgw.py)

Every fixture imports what it needs lazily, so collecting the unit tests stays cheap. Under
pytest-xdist the fixture folders are built once for the whole run (a file lock guards the
build in the run's shared temp folder); servers are per worker.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from helpers.content import FixtureRepo
    from helpers.hubgate import HubgateServer
    from helpers.rgw import S3Endpoint

# The HF clients read these at import time; nothing in the test process may phone home.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("DISABLE_SAFETENSORS_CONVERSION", "1")


def _shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that every xdist worker of this run sees (the run's base temp), else this session's."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    shared = base / "hubgate-fixtures"
    shared.mkdir(exist_ok=True)
    return shared


@pytest.fixture(scope="session")
def fixture_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Fixture folders by key: tiny (1-layer GPT-2 + BPE tokenizer via save_pretrained, README with
    front matter), tiny-pr (the same with another README), tree, notes, parquet, csv."""
    from filelock import FileLock

    from helpers import content

    shared = _shared_dir(tmp_path_factory)
    builders = {
        "tiny": content.build_tiny_model,
        "tiny-pr": lambda out: content.build_tiny_variant(shared / "tiny", out),
        "tree": content.build_tree_repo,
        "notes": content.build_notes_repo,
        "parquet": content.build_parquet_dataset,
        "csv": content.build_csv_dataset,
    }
    dirs = {}
    with FileLock(str(shared / "build.lock")):
        for key, build in builders.items():
            out = shared / key
            if not (shared / f"{key}.done").exists():
                build(out)
                (shared / f"{key}.done").touch()
            dirs[key] = out
    return dirs


@pytest.fixture(scope="session")
def fixture_repos(fixture_dirs: dict[str, Path]) -> list[FixtureRepo]:
    """What every server publishes (in this order: acme/tiny's PR commit comes after main)."""
    from helpers.content import fixture_repo

    return [
        fixture_repo("tiny", "model", "acme/tiny", fixture_dirs["tiny"], ("main", "refs/tags/v1.0")),
        fixture_repo("tiny-pr", "model", "acme/tiny", fixture_dirs["tiny-pr"], ("refs/pr/1",)),
        fixture_repo("tree", "model", "acme/tree", fixture_dirs["tree"]),
        fixture_repo("notes", "model", "beta/tiny-notes", fixture_dirs["notes"]),
        fixture_repo("parquet", "dataset", "acme/parquet-data", fixture_dirs["parquet"]),
        fixture_repo("csv", "dataset", "acme/csv-data", fixture_dirs["csv"]),
    ]


@pytest.fixture(scope="session")
def fixture_repo_by_key(fixture_repos: list[FixtureRepo]) -> dict[str, FixtureRepo]:
    return {r.key: r for r in fixture_repos}


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """moto's S3 over real HTTP on 127.0.0.1 (OS-assigned port); yields its origin."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rgw_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """Ceph RGW (a real S3 server) on 127.0.0.1: one cluster for the whole run, shared by the xdist
    workers, stopped and wiped by the last one to finish. Fails (never skips) without Ceph's packages."""
    from helpers.rgw import RgwCluster, missing_tools

    why = missing_tools()
    if why:
        pytest.fail(why, pytrace=False)
    cluster = RgwCluster(_shared_dir(tmp_path_factory))
    user = f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{os.getpid()}"
    endpoint = cluster.acquire(user)
    try:
        yield endpoint
    finally:
        cluster.release(user)


def _new_bucket(s3: S3Endpoint, flavour: str) -> str:
    bucket = f"hubgate-{flavour}-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=bucket)
    return bucket


def _serve(flavour: str, tmp_path_factory: pytest.TempPathFactory, repos: list[FixtureRepo],
           s3: S3Endpoint | None = None, **kwargs: object) -> Iterator[HubgateServer]:
    from helpers.hubgate import start_hubgate

    bucket = _new_bucket(s3, flavour) if s3 else None
    server = start_hubgate(flavour, tmp_path_factory.mktemp(f"hubgate-{flavour}"), repos,
                           s3_origin=s3.origin if s3 else None, bucket=bucket,
                           s3_keys=(s3.access_key, s3.secret_key) if s3 else None, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def hubgate_local(tmp_path_factory: pytest.TempPathFactory, fixture_repos: list[FixtureRepo]) -> Iterator[HubgateServer]:
    """Local store; the csv dataset goes in through the ``hubgate import`` CLI, the rest through import_folder."""
    yield from _serve("local", tmp_path_factory, fixture_repos, cli_repos=("csv",))


def _moto(origin: str) -> S3Endpoint:
    from helpers.rgw import S3Endpoint

    return S3Endpoint(origin, "testing", "testing", "moto")


@pytest.fixture(scope="session")
def hubgate_s3_redirect(tmp_path_factory: pytest.TempPathFactory, fixture_repos: list[FixtureRepo],
                        moto_s3: str) -> Iterator[HubgateServer]:
    yield from _serve("s3-redirect", tmp_path_factory, fixture_repos, _moto(moto_s3))


@pytest.fixture(scope="session")
def hubgate_s3_proxy(tmp_path_factory: pytest.TempPathFactory, fixture_repos: list[FixtureRepo],
                     moto_s3: str) -> Iterator[HubgateServer]:
    yield from _serve("s3-proxy", tmp_path_factory, fixture_repos, _moto(moto_s3))


@pytest.fixture(scope="session")
def hubgate_s3_redirect_rgw(tmp_path_factory: pytest.TempPathFactory, fixture_repos: list[FixtureRepo],
                            rgw_s3: S3Endpoint) -> Iterator[HubgateServer]:
    yield from _serve("s3-redirect-rgw", tmp_path_factory, fixture_repos, rgw_s3)


@pytest.fixture(scope="session")
def hubgate_s3_proxy_rgw(tmp_path_factory: pytest.TempPathFactory, fixture_repos: list[FixtureRepo],
                         rgw_s3: S3Endpoint) -> Iterator[HubgateServer]:
    yield from _serve("s3-proxy-rgw", tmp_path_factory, fixture_repos, rgw_s3)


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(scope="session", autouse=True)
def _isolated_hf_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The in-process HF client: no token, no telemetry, and a cache in tmp even if a call forgets cache_dir."""
    import huggingface_hub.constants as c

    home = tmp_path_factory.mktemp("hf-home")
    mp = pytest.MonkeyPatch()
    mp.setattr(c, "HF_HUB_DISABLE_TELEMETRY", True)
    mp.setattr(c, "HF_TOKEN_PATH", str(home / "token"))
    mp.setattr(c, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    mp.setattr(c, "HF_HUB_CACHE", str(home / "hub"))
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        mp.delenv(var, raising=False)
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to resolve a non-loopback name (the real Hub) fails the call at once."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in LOOPBACK:
            raise socket.gaierror(socket.EAI_NONAME, f"tests stay on 127.0.0.1, not {name}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
