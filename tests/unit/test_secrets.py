"""The instance secret key: created once, owner-only; processes starting at once agree on one key."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from registry import secrets


def test_the_key_is_created_once_owner_only_and_then_read(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secret.key"
    first = secrets.load_or_create_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert secrets.load_or_create_key(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temp file left


def test_processes_starting_at_once_get_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    with ProcessPoolExecutor(max_workers=4) as pool:
        keys = list(pool.map(secrets.load_or_create_key, [path] * 16))
    assert len(set(keys)) == 1 and keys[0] == path.read_bytes().strip()
