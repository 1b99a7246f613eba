"""Helpers for the deploy tests: the pinned binaries (deploy/tools/install-test-tools.sh), rendering."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "hubgate"
TEST_VALUES = CHART / "ci" / "test-values.yaml"
COMPOSE_DIR = DEPLOY / "compose"
# scram_postgres's superuser password: what a generated password may hold, and all a URL would choke on
PASSWORD = 'pg$$pa#ss ${HOME} "q" $USER end @:/?%'


def tool(name: str) -> str:
    """The path of ``name`` (the venv's own first), else skip; under CI a missing tool is a failure."""
    here = Path(sys.executable).with_name(name)
    found = str(here) if here.exists() else shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed: run deploy/tools/install-test-tools.sh (.ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def helm_template(*args: str, values: Path | None = TEST_VALUES, namespace: str = "hubgate",
                  release: str = "hubgate") -> subprocess.CompletedProcess[str]:
    cmd = [tool("helm"), "template", release, str(CHART), "--namespace", namespace]
    if values is not None:
        cmd += ["-f", str(values)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=60)


def render(*args: str, **kwargs: Any) -> list[dict[str, Any]]:
    """The chart's objects, rendered with the test values (plus ``args``: --set …)."""
    proc = helm_template(*args, **kwargs)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def one(objects: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, f"{len(found)} {kind} objects named *{name_suffix}"
    return found[0]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())
