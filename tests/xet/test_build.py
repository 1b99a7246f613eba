"""Publish-time building, deduplication across revisions, verify (corrupt xorbs), gc and backfill."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from mirror.settings import StorageSettings
from mirror.storage import layout, open_store
from mirror.xet import formats, maintenance, reconstruct
from mirror.xet.builder import XetBuilder
from tests.xet.support import big_models


def _store(root: Path):  # type: ignore[no-untyped-def]
    return open_store(StorageSettings(backend="local", local_root=root))


def _ingest(store, data: bytes) -> str:  # type: ignore[no-untyped-def]
    return store.ingest_file(io.BytesIO(data), size=len(data)).sha256  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    base, tuned = big_models(tmp_path_factory.mktemp("models"))
    return (base / "model.safetensors").read_bytes(), (tuned / "model.safetensors").read_bytes()


def test_fine_tune_stores_only_its_new_chunks(tmp_path: Path, models: tuple[bytes, bytes]) -> None:
    base, tuned = models
    store = _store(tmp_path / "s")
    builder = XetBuilder(store, threshold=1)
    first = builder.build_blobs([(_ingest(store, base), len(base))])
    assert first.xorb_bytes_new > len(base) * 0.99
    tuned_sha = _ingest(store, tuned)
    second = builder.build_blobs([(tuned_sha, len(tuned))])
    assert second.built == [tuned_sha] and not second.failed
    # 1 MiB of 40 changed: the rest is found in the base's xorbs (hf_xet's global dedup query, answered from
    # the store), so only a few MiB of new xorbs are stored
    assert second.xorb_bytes_new < 0.2 * len(tuned), second
    record = builder.xet.get_file(builder.xet.file_hash_of(tuned_sha))  # type: ignore[arg-type]
    assert record is not None and len(record.xorbs) >= 2  # it reuses the base's xorb
    # a plan over the whole reuse-spanning file gives its exact bytes back
    plan = reconstruct.plan(record, (len(tuned) // 3, len(tuned) - 3), builder.xet.xorb_footer)
    out = b"".join(b"".join(formats.iter_chunks(builder.xet.read_xorb(t.xorb), builder.xet.xorb_footer(t.xorb),
                                                t.chunk_start, t.chunk_end)) for t in plan.terms)
    assert out[plan.offset_into_first_range:][:len(tuned) - 3 - len(tuned) // 3 + 1] == tuned[len(tuned) // 3:-2]


def test_a_refused_upload_leaves_the_blob_plain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mirror.xet import ingest

    def refuse(self, xorb_hash: str, data: bytes) -> bool:  # type: ignore[no-untyped-def]
        raise formats.XetFormatError("test: refused")

    monkeypatch.setattr(ingest.IngestSession, "receive_xorb", refuse)
    store = _store(tmp_path / "s")
    data = os.urandom(300_000)
    sha = _ingest(store, data)
    report = XetBuilder(store, threshold=1).build_blobs([(sha, len(data))])
    assert report.built == [] and sha in report.failed
    assert XetBuilder(store, threshold=1).xet.file_hash_of(sha) is None
    assert not list(store.driver.iter_keys(layout.XET_SHA256_PREFIX))


def test_verify_quarantines_a_corrupt_xorb_and_withdraws_its_files(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    data = os.urandom(2_000_000)
    sha = _ingest(store, data)
    builder = XetBuilder(store, threshold=1)
    builder.build_blobs([(sha, len(data))])
    assert maintenance.verify(store).ok
    xorb = next(builder.xet.iter_xorbs())
    path = store.driver.local_path(layout.xorb_key(xorb))
    raw = bytearray(path.read_bytes())
    raw[1000] ^= 0xFF  # one flipped bit of chunk data: same size, wrong bytes
    os.chmod(path, 0o644)
    path.write_bytes(bytes(raw))
    dry = maintenance.verify(store, dry_run=True)
    assert dry.corrupt_xorbs == [xorb] and dry.files_withdrawn == [sha]
    assert XetBuilder(store, threshold=1).xet.file_hash_of(sha) is not None  # a dry run changes nothing
    report = maintenance.verify(store)
    assert report.corrupt_xorbs == [xorb] and report.files_withdrawn == [sha]
    fresh = XetBuilder(store, threshold=1)
    assert fresh.xet.file_hash_of(sha) is None  # clients now get the plain answer
    assert not fresh.xet.has_xorb(xorb)
    assert store.driver.stat(layout.xorb_quarantine_key(xorb)) is not None
    rebuilt = fresh.build_blobs([(sha, len(data))])  # the backfill repairs it from the (intact) blob
    assert rebuilt.built == [sha] and maintenance.verify(store).ok


def test_gc_keeps_live_xet_objects_and_sweeps_orphans(tmp_path: Path) -> None:
    store = _store(tmp_path / "s")
    keep, drop = os.urandom(500_000), os.urandom(600_000)
    keep_sha, drop_sha = _ingest(store, keep), _ingest(store, drop)
    builder = XetBuilder(store, threshold=1)
    builder.build_blobs([(keep_sha, len(keep))])
    builder.build_blobs([(drop_sha, len(drop))])
    assert len(list(builder.xet.iter_xorbs())) == 2
    young = maintenance.collect(store, {keep_sha, drop_sha}, cutoff=time.time() - 3600)
    assert young.xorbs_swept == 0 and young.files_swept == 0
    store.delete(drop_sha)  # its blob was swept by gc
    dry = maintenance.collect(store, {keep_sha}, cutoff=time.time() + 1, dry_run=True)
    assert dry.files_swept == 1 and dry.xorbs_swept == 1 and dry.shards_swept == 1
    report = maintenance.collect(store, {keep_sha}, cutoff=time.time() + 1)
    assert (report.files_swept, report.xorbs_swept, report.shards_swept) == (1, 1, 1)
    fresh = XetBuilder(store, threshold=1)
    assert fresh.xet.file_hash_of(drop_sha) is None and fresh.xet.file_hash_of(keep_sha) is not None
    assert len(list(fresh.xet.iter_xorbs())) == 1 and maintenance.verify(store).ok


def test_publish_with_xet_builds_and_backfill_covers_earlier_snapshots(tmp_path: Path, models: tuple[bytes, bytes]) -> None:
    from api.app import build_services
    from api.cli_xet import builder as builder_for
    from api.settings import load
    from mirror.importer import import_folder
    from registry.types import RepoRef

    base, _ = models
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(base)
    (folder / "config.json").write_text('{"model_type": "x"}')
    env = {"HUBGATE_DATA_DIR": str(tmp_path / "data"), "HUBGATE_UPSTREAM_URL": ""}
    svc_off = build_services(load(environ=env | {"HUBGATE_XET": "off"}))
    assert builder_for(svc_off) is None
    result = import_folder(svc_off.engine, svc_off.store, folder, RepoRef.parse("model", "acme/m"), xet=None)
    build = XetBuilder(svc_off.store, threshold=1024)
    assert build.xet.file_hash_of(result.manifest.files[1].sha256) is None  # off: nothing built
    todo, report = maintenance.backfill(svc_off.engine, build, dry_run=True)
    assert [s for s, _ in todo] == [f.sha256 for f in result.manifest.files if f.size >= 1024]
    todo, report = maintenance.backfill(svc_off.engine, build)
    assert report.built == [s for s, _ in todo] and not report.failed
    svc_on = build_services(load(environ=env | {"HUBGATE_XET": "on", "HUBGATE_XET_THRESHOLD_BYTES": "1024"}))
    (folder / "extra.bin").write_bytes(os.urandom(5000))
    again = import_folder(svc_on.engine, svc_on.store, folder, RepoRef.parse("model", "acme/m2"),
                          xet=builder_for(svc_on))
    extra = next(f for f in again.manifest.files if f.path == "extra.bin")
    assert XetBuilder(svc_on.store).xet.file_hash_of(extra.sha256) is not None
