"""Compose passes the PostgreSQL password as PGPASSWORD beside a URL without one (no URL-encoding of a
generated password): prove that hubgate connects that way, against a real server with password auth."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .test_compose import COMPOSE
from .tools import PASSWORD


def _hubgate_init(port: int, data_dir: Path, password: str) -> subprocess.CompletedProcess[str]:
    compose = yaml.safe_load(COMPOSE.read_text())
    code = compose["services"]["hubgate-init"]["entrypoint"][2]
    url = compose["x-hubgate-environment"]["HUBGATE_DATABASE_URL"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HUBGATE_", "PG"))}
    env.update({"HUBGATE_DATABASE_URL": url.replace("@postgres:5432/hubgate", f"@127.0.0.1:{port}/postgres")
                .replace("//hubgate@", "//postgres@"),
                "PGPASSWORD": password, "HUBGATE_DATA_DIR": str(data_dir), "HUBGATE_UPSTREAM_URL": ""})
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.integration
def test_hubgate_reaches_postgres_with_the_password_in_pgpassword(scram_postgres: int, tmp_path: Path) -> None:
    ok = _hubgate_init(scram_postgres, tmp_path / "a", PASSWORD)
    assert ok.returncode == 0, ok.stderr[-3000:]
    wrong = _hubgate_init(scram_postgres, tmp_path / "b", PASSWORD[:-1])
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr
