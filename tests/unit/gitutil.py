"""Run the real ``git`` in isolation (no user or system config), to compare hubgate's object ids with git's."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")

IDENTITY = {
    "GIT_AUTHOR_NAME": "hubgate", "GIT_AUTHOR_EMAIL": "hubgate@localhost", "GIT_AUTHOR_DATE": "@0 +0000",
    "GIT_COMMITTER_NAME": "hubgate", "GIT_COMMITTER_EMAIL": "hubgate@localhost", "GIT_COMMITTER_DATE": "@0 +0000",
}


def git(cwd: Path, *args: str, input: bytes | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(IDENTITY, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, HOME=str(cwd))
    out = subprocess.run([GIT or "git", *args], cwd=cwd, env=env, input=input, capture_output=True, check=True)
    return out.stdout.decode("utf-8").strip()


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    git(path, "config", "core.autocrlf", "false")
    git(path, "config", "core.fileMode", "false")
    return path


def all_tree_ids(repo: Path, rev: str = "HEAD") -> dict[str, str]:
    """Path -> id of every tree in ``rev`` (``""`` is the root), from ``git ls-tree -r -t -z``."""
    out = {"": git(repo, "rev-parse", f"{rev}^{{tree}}")}
    raw = git(repo, "ls-tree", "-r", "-t", "-z", rev)
    for record in filter(None, raw.split("\0")):
        meta, path = record.split("\t", 1)
        _mode, kind, oid = meta.split()
        if kind == "tree":
            out[path] = oid
    return out
