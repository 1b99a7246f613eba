"""Fixtures for the request / approval / sync tests.

* ``fake_hub``      a session-scoped fake huggingface.co + CDN (tests/fakes/fake_hub.py) on two loopback origins;
                    every test creates its own repos in it (``unique_repo``), so tests never share upstream state.
* ``make_hubgate``  hubgate instances (real uvicorn on 127.0.0.1, fresh data dir each) whose upstream is the
                    fake hub (or another hubgate); each has an admin token, a REST helper and ``sync()``, which
                    runs the sync worker (``Worker.run_once``) until the queue is empty.
* ``postgres_server`` a throwaway PostgreSQL cluster (initdb + pg_ctl as the ``postgres`` OS user).
* repo builders: the tiny GPT-2 (shared fixture folder) plus synthetic files, pickle, remote code, model cards.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from fakes.fake_hub import FakeHub
from helpers.content import safetensors_bytes
from helpers.waiting import wait_for  # noqa: F401  (the sync tests import it from here)
from fakes.server import ServerThread



# ------------------------------------------------------------------------------------------------
# isolation: the in-process HF client never reads a real token or cache and never leaves loopback




@pytest.fixture
def hf_cache(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"


# ------------------------------------------------------------------------------------------------
# the fake upstream and what goes in it


@pytest.fixture(scope="session")
def fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub(page_size=3).start()
    hub.tokens.add(UPSTREAM_TOKEN)
    try:
        yield hub
    finally:
        hub.stop()


UPSTREAM_TOKEN = "hf_fakeUpstreamToken0123456789"


def unique_repo(name: str, org: str = "acme") -> str:
    return f"{org}/{name}-{uuid.uuid4().hex[:8]}"


def card(license: str | None = "mit", *, base_model: str | list[str] | None = None, title: str = "model",
         pipeline_tag: str | None = "text-generation") -> bytes:
    lines = ["---"]
    if license:
        lines.append(f"license: {license}")
    lines += ["library_name: transformers"]
    if pipeline_tag:
        lines.append(f"pipeline_tag: {pipeline_tag}")
    if isinstance(base_model, list):
        lines += ["base_model:"] + [f"- {b}" for b in base_model]
    elif base_model:
        lines.append(f"base_model: {base_model}")
    lines += ["tags:", "- hubgate-sync-test", "---", f"# {title}", ""]
    return "\n".join(lines).encode()


PICKLE_BYTES = pickle.dumps({"wte.weight": [[0.25] * 8] * 4, "note": "a torch-style pickle checkpoint"}, protocol=4)
REMOTE_CODE = b"from transformers import GPT2LMHeadModel\n\n\nclass XForCausalLM(GPT2LMHeadModel):\n    pass\n"


def small_files(seed: int = 0, n: int = 3) -> dict[str, bytes]:
    """A few small synthetic files: regular text in a folder and a small LFS file."""
    files = {f"data/part-{i}.txt": f"part {i} seed {seed}\n".encode() * (50 + i) for i in range(n)}
    files["data/extra.safetensors"] = safetensors_bytes(2048, seed)
    return files


@pytest.fixture(scope="session")
def tiny_files(fixture_dirs: dict[str, Path]) -> dict[str, bytes]:
    """The 1-layer GPT-2 (n_embd 32) written by transformers' save_pretrained, without its README."""
    folder = fixture_dirs["tiny"]
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "README.md"}


@pytest.fixture(scope="session")
def tiny_folder(fixture_dirs: dict[str, Path]) -> Path:
    return fixture_dirs["tiny"]


def model_files(tiny: dict[str, bytes], *, license: str | None = "mit", base_model: str | None = None,
                pickle_weights: bool = False, safetensors: bool = True, remote_code: bool = False,
                extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    files = dict(tiny)
    files["README.md"] = card(license, base_model=base_model)
    if not safetensors:
        files.pop("model.safetensors", None)
    if pickle_weights:
        files["pytorch_model.bin"] = PICKLE_BYTES
    if remote_code:
        config = json.loads(files["config.json"])
        config["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
        files["config.json"] = json.dumps(config, indent=2).encode()
        files["modeling_x.py"] = REMOTE_CODE
    files.update(extra or {})
    return files


# ------------------------------------------------------------------------------------------------
# hubgate instances


@dataclass
class Hubgate:
    name: str
    data_dir: Path
    env: dict[str, str]
    app: Any
    server: ServerThread
    admin_token: str
    client: httpx.Client
    _worker: Any = None
    _stopped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def svc(self) -> Any:
        return self.app.state.services

    @property
    def settings(self) -> Any:
        return self.svc.settings

    def api(self, method: str, path: str, *, token: str | None | bool = True, **kwargs: Any) -> httpx.Response:
        """A call to the admin REST API; ``token=True`` is the admin token, None/False none."""
        headers = dict(kwargs.pop("headers", {}))
        tok = self.admin_token if token is True else (token or None)
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        return self.client.request(method, f"/registry/v1{path}", headers=headers, **kwargs)

    def request(self, repo_id: str, revision: str = "main", *, token: str | bool = True, expect: int = 201,
                **body: Any) -> dict[str, Any]:
        r = self.api("POST", "/requests", token=token,
                     json={"repo_type": body.pop("repo_type", "model"), "repo_id": repo_id, "revision": revision, **body})
        assert r.status_code == expect, r.text
        return r.json()  # type: ignore[no-any-return]

    def get_request(self, pk: int) -> dict[str, Any]:
        r = self.api("GET", f"/requests/{pk}")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def approve(self, pk: int, *, token: str | bool = True, expect: int = 200,
                reason: str | None = "approved by the test suite") -> dict[str, Any]:
        """Approve with a reason (repos without a licence need one; test_scan_gate checks that rule)."""
        r = self.api("POST", f"/requests/{pk}/approve", token=token, json={"reason": reason} if reason else None)
        assert r.status_code == expect, r.text
        return r.json()  # type: ignore[no-any-return]

    def create_token(self, role: str, name: str | None = None) -> str:
        r = self.api("POST", "/tokens", json={"name": name or f"{role}-{uuid.uuid4().hex[:6]}", "role": role})
        assert r.status_code == 201, r.text
        return r.json()["token"]  # type: ignore[no-any-return]

    @property
    def worker(self) -> Any:
        if self._worker is None:
            from api.app import build_worker

            self._worker = build_worker(self.svc)
        return self._worker

    def sync(self, max_jobs: int = 20) -> int:
        """Run queued jobs to the end with the sync worker (in this process); returns how many ran."""
        ran = 0
        while ran < max_jobs and self.worker.run_once():
            ran += 1
        return ran

    def approve_and_sync(self, pk: int) -> dict[str, Any]:
        self.approve(pk)
        self.sync()
        return self.get_request(pk)

    def manifest_exists(self, repo_id: str, commit: str, repo_type: str = "model") -> bool:
        from mirror.errors import ObjectNotFoundError
        from registry.types import RepoRef

        try:
            self.svc.store.get_manifest(RepoRef.parse(repo_type, repo_id), commit)
        except ObjectNotFoundError:
            return False
        return True

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.client.close()
        self.server.stop()
        self.svc.close()
        self.svc.engine.dispose()


def hubgate_environ(data_dir: Path, upstream: str, **settings: object) -> dict[str, str]:
    env = {
        "HUBGATE_DATA_DIR": str(data_dir),
        "HUBGATE_UPSTREAM_URL": upstream,
        "HUBGATE_UPSTREAM_ALLOW_PRIVATE": "true",  # the fake Hub (or an outer hubgate) is on loopback
        "HUBGATE_WORKER_IN_PROCESS": "false",
        "HUBGATE_REF_CACHE_SECONDS": "0",
        "HUBGATE_TREE_PAGE_SIZE": "3",
        "HUBGATE_LOG_LEVEL": "warning",
    }
    for name, value in settings.items():
        if value is None:
            env.pop(f"HUBGATE_{name.upper()}", None)
        else:
            env[f"HUBGATE_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def start_hubgate(data_dir: Path, env: dict[str, str], name: str = "hubgate") -> Hubgate:
    from api.app import create_app
    from api.settings import load
    from registry import tokens
    from registry.audit import Actor
    from registry.db import session_scope

    settings = load(environ=env)
    app = create_app(settings)
    with session_scope(app.state.services.engine) as session:
        admin = tokens.create(session, name="test-admin", role="admin", actor=Actor("test-setup", "admin"),
                              key=app.state.services.token_key, expires_days=None)
    server = ServerThread(app, name=f"{name}-uvicorn").start()
    client = httpx.Client(base_url=server.url, timeout=60)
    return Hubgate(name, data_dir, env, app, server, admin.token, client)


@pytest.fixture
def make_hubgate(tmp_path: Path, fake_hub: FakeHub) -> Iterator[Callable[..., Hubgate]]:
    """``make_hubgate(upstream=None, **settings)``: a fresh hubgate (settings by their field names)."""
    made: list[Hubgate] = []

    def make(upstream: str | None = None, *, name: str = "hubgate", **settings: object) -> Hubgate:
        data_dir = tmp_path / f"{name}-{len(made)}"
        if upstream is None and "upstream_redirect_hosts" not in settings:
            settings["upstream_redirect_hosts"] = fake_hub.cdn_url.split("://", 1)[1]  # its LFS CDN, on loopback
        env = hubgate_environ(data_dir, upstream or fake_hub.url, **settings)
        hg = start_hubgate(data_dir, env, name)
        made.append(hg)
        return hg

    yield make
    for hg in reversed(made):
        hg.stop()


@pytest.fixture
def hubgate(make_hubgate: Callable[..., Hubgate]) -> Hubgate:
    return make_hubgate()


def finding(request_doc: dict[str, Any], rule: str) -> dict[str, Any] | None:
    return next((f for f in request_doc["findings"] if f["rule"] == rule), None)


def rules(request_doc: dict[str, Any]) -> set[str]:
    return {f["rule"] for f in request_doc["findings"]}


class BackgroundWorker:
    """``Worker.run_once`` in a thread, so that a test can watch a sync while it runs."""

    def __init__(self, hg: Hubgate) -> None:
        self.hg = hg
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.hg.sync()
        except BaseException as exc:  # pragma: no cover - shown by join()
            self.error = exc

    def __enter__(self) -> "BackgroundWorker":
        self._thread.start()
        return self

    def join(self, timeout: float = 60) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the sync did not finish"
        if self.error is not None:
            raise self.error

    def __exit__(self, *exc: object) -> None:
        self._thread.join(60)


# ------------------------------------------------------------------------------------------------
# PostgreSQL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    port: int
    base: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = f"hubgate_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 and a free port (trust auth), stopped at the end.

    Needs the Debian ``postgresql`` package (initdb, pg_ctl); initdb refuses root, so as root the
    server runs as the ``postgres`` OS user in a temp folder it owns.
    """
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    initdb = found[-1] if found else shutil.which("initdb")
    if not initdb:
        pytest.skip("PostgreSQL server binaries not found: apt-get install -y postgresql")
    pytest.importorskip("psycopg")
    bindir = Path(initdb).parent
    base = Path(tempfile.mkdtemp(prefix="hubgate-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data = base / "data"
    port = _free_port()

    def run(*cmd: str) -> None:
        proc = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")

    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C",
        "--no-sync")
    options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base} -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100 -c TimeZone=UTC")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "server.log"), "-w", "-t", "60",
        "start")
    try:
        yield PostgresServer(port, base)
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
