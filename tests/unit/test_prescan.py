"""Scanning ahead (mirror.scan.gate.Prescan): files scanned while a sync fetches the rest are not scanned
again at publish, and the gate decides on them exactly as if it had scanned them itself."""

from __future__ import annotations

import io
import pickle
from typing import Any

import pytest
from sqlalchemy.engine import Engine

import mirror.scan
from mirror.scan.gate import Gate, Prescan
from mirror.storage.blobs import BlobStore
from registry.errors import ContentBlockedError
from registry.manifest import Manifest
from registry.types import RepoType

from .conftest import entry


class _Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.system, ("true",))


FILES = {"README.md": b"# hi\n", "config.json": b'{"model_type": "gpt2"}\n', "evil.pkl": pickle.dumps(_Exploit())}


def _manifest(store: BlobStore, files: dict[str, bytes]) -> Manifest:
    for data in files.values():
        store.ingest_file(io.BytesIO(data), size=len(data))
    return Manifest(repo_type=RepoType.MODEL, repo_id="acme/ahead", commit="1" * 40,
                    created_at="2024-01-01T00:00:00.000000Z", source={"kind": "test"},
                    files=tuple(entry(p, d) for p, d in sorted(files.items())))


def _count_scans(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    real = mirror.scan.scan_items

    def counting(items, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen: list[str] = []
        calls.append(seen)

        def each():  # type: ignore[no-untyped-def]
            for item in items:
                seen.append(item.path)
                yield item

        return real(each(), *args, **kwargs)

    monkeypatch.setattr(mirror.scan, "scan_items", counting)
    return calls


def _records(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in f.items() if k != "duration_ms"} for f in result["files"]]


def test_files_scanned_ahead_are_not_scanned_again_and_decide_the_same(
        store: BlobStore, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _manifest(store, FILES)
    with pytest.raises(ContentBlockedError) as direct:
        Gate(store).enforce(engine, manifest)
    calls = _count_scans(monkeypatch)
    ahead = Prescan(Gate(store), {f.path: f.size for f in manifest.files})
    for f in manifest.files[:2]:  # README.md and config.json; evil.pkl is "still downloading"
        ahead.add(f.path, f.sha256, f.size)
    gate = ahead.finish()
    with pytest.raises(ContentBlockedError) as reused:
        gate.enforce(engine, manifest)
    assert calls == [["README.md", "config.json"], ["evil.pkl"]]  # ahead, then only what was left
    assert _records(reused.value.scan) == _records(direct.value.scan)
    assert [b["path"] for b in reused.value.scan["blocking"]] == ["evil.pkl"]


def test_scans_made_for_another_tree_are_not_reused(store: BlobStore, engine: Engine,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    files = {k: v for k, v in FILES.items() if k != "evil.pkl"}
    manifest = _manifest(store, files)
    calls = _count_scans(monkeypatch)
    ahead = Prescan(Gate(store), {**{f.path: f.size for f in manifest.files}, "other.bin": 5})
    for f in manifest.files:
        ahead.add(f.path, f.sha256, f.size)
    ahead.finish().enforce(engine, manifest)
    assert calls == [["README.md", "config.json"], ["README.md", "config.json"]]


def test_a_cancelled_prescan_stops(store: BlobStore) -> None:
    manifest = _manifest(store, FILES)
    ahead = Prescan(Gate(store), {f.path: f.size for f in manifest.files})
    ahead.add(manifest.files[0].path, manifest.files[0].sha256, manifest.files[0].size)
    ahead.cancel()
    assert not ahead._thread.is_alive()
