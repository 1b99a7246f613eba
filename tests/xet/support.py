"""Helpers shared by the Xet tests and their fixtures."""

from __future__ import annotations

from pathlib import Path

from helpers.content import FixtureRepo, safetensors_bytes, write_tree
from helpers.hubgate import HubgateServer, settings_environ
from helpers.live import LiveServer

XET_ENV = {"HUBGATE_XET": "on", "HUBGATE_XET_THRESHOLD_BYTES": "4096"}
BIG_SIZE = 40 * 1024 * 1024


def big_models(root: Path) -> tuple[Path, Path]:
    """A 40 MiB safetensors model and a fine-tune of it: 1 MiB in its middle changed, the rest equal."""
    base = safetensors_bytes(BIG_SIZE, seed=7)
    tuned = bytearray(base)
    mid = len(base) // 2
    tuned[mid:mid + 1024 * 1024] = bytes((b + 1) % 256 for b in base[mid:mid + 1024 * 1024])
    config = b'{"model_type": "test", "hidden_size": 8}\n'
    a = write_tree(root / "big", {"model.safetensors": base, "config.json": config})
    b = write_tree(root / "big-ft", {"model.safetensors": bytes(tuned), "config.json": config})
    return a, b


def start_xet_hubgate(flavour: str, data_dir: Path, repos: list[FixtureRepo], *, extra: dict[str, str] | None = None,
                      s3_origin: str | None = None, bucket: str | None = None,
                      s3_keys: tuple[str, str] | None = None) -> HubgateServer:
    from api.app import create_app
    from api.cli_xet import builder
    from api.settings import load
    from mirror.importer import import_folder
    from registry.types import RepoRef

    environ = settings_environ(flavour, data_dir, s3_origin=s3_origin, bucket=bucket, s3_keys=s3_keys) | XET_ENV \
        | (extra or {})
    settings = load(environ=environ)
    app = create_app(settings, run_worker=False)
    svc = app.state.services
    commits = {}
    for repo in repos:
        result = import_folder(svc.engine, svc.store, repo.folder, RepoRef.parse(repo.repo_type, repo.repo_id),
                               refs=list(repo.refs), xet=builder(svc))
        commits[repo.key] = result.manifest.commit
    live = LiveServer(app).start()
    return HubgateServer(flavour.removesuffix("-rgw"), live, app, settings, {r.key: r for r in repos}, commits,
                         s3_origin, bucket, {}, None if flavour == "local" else ("rgw" if "rgw" in flavour else "moto"))
