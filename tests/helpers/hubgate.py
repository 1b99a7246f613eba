"""Start a hubgate server flavour (local store, S3 redirect, S3 proxy) fed with fixture repos."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .content import FixtureRepo
from .live import LiveServer

# local store; S3 over moto (a mock); S3 over Ceph RGW (a real S3 server): redirect or proxy mode each
FLAVOURS = ("local", "s3-redirect", "s3-proxy", "s3-redirect-rgw", "s3-proxy-rgw")
S3_KEYS = {"HUBGATE_S3_ACCESS_KEY_ID": "testing", "HUBGATE_S3_SECRET_ACCESS_KEY": "testing"}
_CLI_OUTPUT = re.compile(r"^(imported|already present): (model|dataset) (\S+) @ ([0-9a-f]{40}) ", re.M)


@dataclass
class HubgateServer:
    flavour: str
    live: LiveServer
    app: Any
    settings: Any
    repos: dict[str, FixtureRepo]
    commits: dict[str, str]  # fixture key -> commit it was published as
    s3_origin: str | None = None
    bucket: str | None = None
    cli_output: dict[str, str] = field(default_factory=dict)
    s3_backend: str | None = None  # "moto" | "rgw"

    @property
    def base_url(self) -> str:
        return self.live.base_url

    @property
    def services(self) -> Any:
        return self.app.state.services

    def recording(self):  # type: ignore[no-untyped-def]
        return self.live.recording()

    def stop(self) -> None:
        self.live.stop()
        self.services.engine.dispose()


def settings_environ(flavour: str, data_dir: Path, *, s3_origin: str | None = None, bucket: str | None = None,
                     s3_keys: tuple[str, str] | None = None) -> dict[str, str]:
    """The HUBGATE_* environment of a flavour (its serve mode: ``flavour`` without a ``-rgw`` suffix), as an
    operator would set it."""
    env = {
        "HUBGATE_DATA_DIR": str(data_dir),
        "HUBGATE_TREE_PAGE_SIZE": "3",  # so that tree listings of the fixtures span several pages
        "HUBGATE_LIST_PAGE_SIZE": "2",
        "HUBGATE_WORKER_IN_PROCESS": "false",
        "HUBGATE_LOG_LEVEL": "warning",
        "HUBGATE_UPSTREAM_URL": "http://127.0.0.1:9",  # never the real Hub
        "HUBGATE_UPSTREAM_ALLOW_PRIVATE": "true",  # that loopback upstream
    }
    if flavour != "local":
        assert s3_origin and bucket
        env.update({
            "HUBGATE_STORAGE": "s3", "HUBGATE_S3_BUCKET": bucket, "HUBGATE_S3_ENDPOINT_URL": s3_origin,
            "HUBGATE_S3_REGION": "us-east-1", "HUBGATE_S3_SERVE": flavour.removeprefix("s3-").removesuffix("-rgw"),
            **S3_KEYS,
        })
        if s3_keys is not None:
            env["HUBGATE_S3_ACCESS_KEY_ID"], env["HUBGATE_S3_SECRET_ACCESS_KEY"] = s3_keys
    return env


def cli_import(environ: dict[str, str], repo: FixtureRepo) -> tuple[str, str]:
    """Run ``hubgate import`` as a user would; returns (commit, stdout)."""
    hubgate = Path(sys.executable).with_name("hubgate")
    cmd = [str(hubgate), "import", str(repo.folder), "--repo", repo.repo_id, "--repo-type", repo.repo_type]
    for ref in repo.refs:
        cmd += ["--ref", ref]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBGATE_")} | environ
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    m = _CLI_OUTPUT.search(proc.stdout)
    if m is None or m.group(3) != repo.repo_id:
        raise RuntimeError(f"unexpected output of hubgate import: {proc.stdout!r}")
    return m.group(4), proc.stdout


def start_hubgate(
    flavour: str,
    data_dir: Path,
    repos: list[FixtureRepo],
    *,
    cli_repos: tuple[str, ...] = (),
    s3_origin: str | None = None,
    bucket: str | None = None,
    s3_keys: tuple[str, str] | None = None,
    extra: dict[str, str] | None = None,
) -> HubgateServer:
    """Publish ``repos`` (those named in ``cli_repos`` through the ``hubgate import`` CLI, the others
    through mirror.importer.import_folder on the app's own services), then serve. ``extra``: more HUBGATE_*
    settings (e.g. ``{"HUBGATE_XET": "off"}`` for a test of the plain path)."""
    from api.app import create_app
    from api.settings import load
    from mirror.importer import import_folder
    from registry.types import RepoRef

    environ = settings_environ(flavour, data_dir, s3_origin=s3_origin, bucket=bucket, s3_keys=s3_keys) | (extra or {})
    commits: dict[str, str] = {}
    cli_output: dict[str, str] = {}
    for repo in repos:
        if repo.key in cli_repos:
            commits[repo.key], cli_output[repo.key] = cli_import(environ, repo)
    settings = load(environ=environ)
    app = create_app(settings, run_worker=False)
    svc = app.state.services
    for repo in repos:
        if repo.key in cli_repos:
            continue
        result = import_folder(svc.engine, svc.store, repo.folder, RepoRef.parse(repo.repo_type, repo.repo_id),
                               refs=list(repo.refs))
        commits[repo.key] = result.manifest.commit
    live = LiveServer(app).start()
    mode = flavour.removesuffix("-rgw")  # what the tests ask: which serve mode
    backend = None if flavour == "local" else ("rgw" if flavour.endswith("-rgw") else "moto")
    return HubgateServer(mode, live, app, settings, {r.key: r for r in repos}, commits, s3_origin, bucket,
                         cli_output, backend)
