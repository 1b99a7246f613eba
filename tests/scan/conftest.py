"""Helpers for the scanner tests: write corpus cases into a snapshot folder and scan them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.scan import FileScan, ScanContext, ScanItem, scan_file


def scan_bytes(tmp_path: Path, path: str, data: bytes, tree: dict[str, int] | None = None) -> FileScan:
    """Scan ``data`` stored under repo path ``path`` in this process (the sandbox has its own tests)."""
    target = tmp_path / "blobs" / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return scan_file(ScanItem(path, "0" * 64, len(data), str(target)), ScanContext(tree or {path: len(data)}))


@pytest.fixture
def scan(tmp_path: Path):  # type: ignore[no-untyped-def]
    def run(path: str, data: bytes, tree: dict[str, int] | None = None) -> FileScan:
        return scan_bytes(tmp_path, path, data, tree)
    return run


def rules(scan: FileScan) -> set[str]:
    return {f.rule for f in scan.findings}
