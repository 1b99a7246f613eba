"""Fixtures for the operations tests (signatures, verify/scrub, gc, rebuild-index, requests across the air gap).

* ``make_instance(storage="local"|"s3", **settings)``: a hubgate instance with a fresh data dir (and,
  for S3, a fresh bucket on the session's moto server). It imports folders with
  ``mirror.importer.import_folder`` on its own services, runs the ``hubgate`` CLI in-process with
  its environment (``inst.cli(...)``), serves itself on a real uvicorn (``inst.serve()``, reusing
  tests/helpers/live.py) and can be closed and reopened on the same data (``inst.reopen()``).
* byte-level access to the stored blobs (flip a byte, truncate, delete, age) on both stores.
* ``fake_hub``: the fake huggingface.co of tests/fakes, for the connected side of the air gap.

Everything stays on 127.0.0.1; the HF client reads no real token or cache.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers.content import safetensors_bytes

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

S3_KEYS = {"HUBGATE_S3_ACCESS_KEY_ID": "testing", "HUBGATE_S3_SECRET_ACCESS_KEY": "testing"}


# ------------------------------------------------------------------------------------------------
# isolation




@pytest.fixture(autouse=True)
def hf_backoff_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The HF client retries a 503 five times with 1-8 s sleeps: make them instant (and record them),
    so that a test of a refused snapshot stays fast. The retries themselves still happen."""
    import time as real_time
    import types

    import huggingface_hub.utils._http as hf_http

    sleeps: list[float] = []
    fake = types.SimpleNamespace(**{k: getattr(real_time, k) for k in dir(real_time) if not k.startswith("__")})
    fake.sleep = sleeps.append
    monkeypatch.setattr(hf_http, "time", fake)
    return sleeps


def http_error_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    return chain


# ------------------------------------------------------------------------------------------------
# content


GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def card(title: str = "model", license: str = "mit") -> bytes:
    return (f"---\nlicense: {license}\nlibrary_name: transformers\ntags:\n- hubgate-ops-test\n---\n# {title}\n").encode()


def model_files(seed: int, *, weights: bytes | None = None, title: str = "model") -> dict[str, bytes]:
    """A small model folder: .gitattributes, README with front matter, config, a nested text file, and an
    LFS-looking ``model.safetensors`` of random bytes."""
    rng = random.Random(seed)
    return {
        ".gitattributes": GITATTRIBUTES,
        "README.md": card(title),
        "config.json": b'{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "seed": %d}\n' % seed,
        "docs/notes.txt": f"notes for seed {seed}\n".encode() * 40,
        "model.safetensors": weights if weights is not None else safetensors_bytes(96 * 1024 + seed, seed),
    }






def flip(data: bytes, at: int | None = None) -> bytes:
    i = len(data) // 2 if at is None else at
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


# ------------------------------------------------------------------------------------------------
# CLI


@contextlib.contextmanager
def hubgate_environ(env: dict[str, str]) -> Iterator[None]:
    """os.environ holds exactly ``env`` as its HUBGATE_* variables while the block runs."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("HUBGATE_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(env)
    try:
        yield
    finally:
        for k in [k for k in os.environ if k.startswith("HUBGATE_")]:
            del os.environ[k]
        os.environ.update(saved)


class CliResult:
    def __init__(self, code: int, out: str, err: str, crash: BaseException | None = None) -> None:
        self.code, self.out, self.err, self.crash = code, out, err, crash

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, crash={self.crash!r}\n--- stdout\n{self.out}\n--- stderr\n{self.err})"


def run_cli(env: dict[str, str], *argv: str) -> CliResult:
    """``hubgate ARGV`` in-process (api.cli.main) with ``env``; an uncaught exception is reported as code -1."""
    from api.cli import main

    out, err = io.StringIO(), io.StringIO()
    crash: BaseException | None = None
    with hubgate_environ(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0) if not isinstance(exc.code, str) else 2
        except Exception as exc:  # noqa: BLE001 - a crash is a finding, shown by the assertion
            import traceback

            crash, code = exc, -1
            err.write(traceback.format_exc())
    return CliResult(code, out.getvalue(), err.getvalue(), crash)


# ------------------------------------------------------------------------------------------------
# instances


class Instance:
    """One hubgate: a data dir, its HUBGATE_* environment, its services, optionally a live server."""

    def __init__(self, name: str, data_dir: Path, env: dict[str, str], *, s3_origin: str | None = None,
                 bucket: str | None = None) -> None:
        self.name, self.data_dir, self.env = name, data_dir, env
        self.s3_origin, self.bucket = s3_origin, bucket
        self.app: Any = None
        self.live: Any = None
        self._client: httpx.Client | None = None
        self._admin_token: str | None = None
        self.open()

    # -- lifecycle
    def open(self) -> Instance:
        from api.app import create_app
        from api.settings import load

        self.app = create_app(load(environ=self.env), run_worker=False)
        return self

    @property
    def svc(self) -> Any:
        return self.app.state.services

    @property
    def storage(self) -> str:
        return self.svc.settings.storage

    def serve(self) -> Instance:
        from helpers.live import LiveServer

        if self.live is None:
            self.live = LiveServer(self.app).start()
        return self

    @property
    def url(self) -> str:
        assert self.live is not None, "serve() first"
        return str(self.live.base_url)

    @property
    def http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=60)
        return self._client

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.live is not None:
            self.live.stop()
            self.live = None

    def close(self) -> None:
        self.stop()
        if self.app is not None:
            self.svc.close()
            self.svc.engine.dispose()
            self.app = None
        self._admin_token = None

    def reopen(self) -> Instance:
        self.close()
        return self.open()

    # -- content and admin
    def import_folder(self, folder: Path, repo_id: str, *, repo_type: str = "model",
                      refs: list[str] | None = None) -> str:
        from mirror.importer import import_folder
        from registry.types import RepoRef

        result = import_folder(self.svc.engine, self.svc.store, folder, RepoRef.parse(repo_type, repo_id),
                               refs=refs, signer=self.svc.signer, instance=self.svc.settings.instance_name)
        return str(result.manifest.commit)

    def manifest(self, repo_id: str, commit: str, repo_type: str = "model") -> Any:
        from registry.types import RepoRef

        return self.svc.store.get_manifest(RepoRef.parse(repo_type, repo_id), commit)

    def sha_of(self, repo_id: str, commit: str, path: str, repo_type: str = "model") -> str:
        return next(f.sha256 for f in self.manifest(repo_id, commit, repo_type).files if f.path == path)

    @property
    def admin_token(self) -> str:
        if self._admin_token is None:
            from registry import tokens
            from registry.audit import Actor
            from registry.db import session_scope

            with session_scope(self.svc.engine) as session:
                self._admin_token = tokens.create(session, name=f"ops-admin-{uuid.uuid4().hex[:6]}", role="admin",
                                                  actor=Actor("ops-test", "admin"), key=self.svc.token_key,
                                                  expires_days=None).token
        return self._admin_token

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.admin_token}", **kwargs.pop("headers", {})}
        return self.http.request(method, f"/registry/v1{path}", headers=headers, **kwargs)

    def cli(self, *argv: str) -> CliResult:
        return run_cli(self.env, *argv)

    def snapshot_state(self, repo_id: str, commit: str, repo_type: str = "model") -> str:
        from sqlmodel import Session, select

        from registry.models import Repo, Snapshot

        with Session(self.svc.engine) as session:
            row = session.exec(
                select(Snapshot).join(Repo, Repo.pk == Snapshot.repo_pk)  # type: ignore[arg-type]
                .where(Repo.repo_type == repo_type, Repo.repo_id == repo_id, Snapshot.commit == commit)
            ).one()
            return str(row.state)

    # -- raw access to stored objects (what an operator's disk or bucket would suffer)
    def _s3(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_origin, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def _path(self, key: str) -> Path:
        return self.data_dir / "store" / key

    def exists(self, key: str) -> bool:
        if self.storage == "local":
            return self._path(key).is_file()
        from botocore.exceptions import ClientError

        try:
            self._s3().head_object(Bucket=self.bucket, Key=key)
        except ClientError:
            return False
        return True

    def read(self, key: str) -> bytes:
        if self.storage == "local":
            return self._path(key).read_bytes()
        return bytes(self._s3().get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def write(self, key: str, data: bytes) -> None:
        """Overwrite a stored object in place (bypassing hubgate)."""
        if self.storage == "local":
            path = self._path(key)
            mode = path.stat().st_mode
            path.chmod(0o644)
            path.write_bytes(data)
            path.chmod(mode & 0o777)
        else:
            self._s3().put_object(Bucket=self.bucket, Key=key, Body=data)

    def remove(self, key: str) -> None:
        if self.storage == "local":
            self._path(key).unlink()
        else:
            self._s3().delete_object(Bucket=self.bucket, Key=key)

    def blob_keys(self) -> set[str]:
        from mirror.storage import layout

        return {k for k in self.svc.store.driver.iter_keys(layout.BLOBS_PREFIX)}


def instance_environ(data_dir: Path, **settings: object) -> dict[str, str]:
    env = {
        "HUBGATE_DATA_DIR": str(data_dir),
        "HUBGATE_WORKER_IN_PROCESS": "false",
        "HUBGATE_LOG_LEVEL": "warning",
        "HUBGATE_UPSTREAM_URL": "http://127.0.0.1:9",  # never the real Hub
        "HUBGATE_UPSTREAM_ALLOW_PRIVATE": "true",  # upstreams in these tests are on loopback
        "HUBGATE_REF_CACHE_SECONDS": "0",  # a branch answer reflects the catalog at once
    }
    for name, value in settings.items():
        key = f"HUBGATE_{name.upper()}"
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def new_bucket(origin: str) -> str:
    import boto3

    bucket = f"hubgate-ops-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=origin, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def make_instance(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Instance]]:
    """``make_instance(storage="local", name="hubgate", **settings)`` -> a fresh Instance (closed at teardown)."""
    made: list[Instance] = []

    def make(storage: str = "local", *, name: str = "hubgate", **settings: object) -> Instance:
        data_dir = tmp_path / f"{name}-{len(made)}"
        env = instance_environ(data_dir, **settings)
        if settings.get("upstream_url") and "upstream_redirect_hosts" not in settings:
            hub = request.getfixturevalue("fake_hub")
            if settings["upstream_url"] == hub.url:  # its LFS files come from its CDN, another loopback origin
                env["HUBGATE_UPSTREAM_REDIRECT_HOSTS"] = hub.cdn_url.split("://", 1)[1]
        origin = bucket = None
        if storage == "s3":
            origin = request.getfixturevalue("moto_s3")
            bucket = new_bucket(origin)
            env.update({"HUBGATE_STORAGE": "s3", "HUBGATE_S3_BUCKET": bucket, "HUBGATE_S3_ENDPOINT_URL": origin,
                        "HUBGATE_S3_REGION": "us-east-1", "HUBGATE_S3_SERVE": "proxy", **S3_KEYS})
        inst = Instance(name, data_dir, env, s3_origin=origin, bucket=bucket)
        made.append(inst)
        return inst

    yield make
    for inst in reversed(made):
        inst.close()


# ------------------------------------------------------------------------------------------------
# the fake upstream Hub


@pytest.fixture(scope="session")
def fake_hub() -> Iterator[Any]:
    from fakes.fake_hub import FakeHub

    hub = FakeHub(page_size=3).start()
    try:
        yield hub
    finally:
        hub.stop()


def unique_repo(name: str, org: str = "acme") -> str:
    return f"{org}/{name}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------------------------
# the standard OMS verifier


def model_signing_verify_all(jobs: list[tuple[Path, Path, Path]]) -> list[tuple[int, str]]:
    """Run several ``model_signing verify key`` at once (each is a fresh interpreter); (exit code, output) each."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "model_signing", "verify", "key", str(folder), "--signature", str(sig),
             "--public_key", str(pub), "--allow_symlinks"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for folder, sig, pub in jobs
    ]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        results.append((p.returncode, out))
    return results
