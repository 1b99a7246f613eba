"""``hubgate gc`` (mirror/gc.py): sweep blobs no manifest references once older than the grace period;
never a referenced blob, never a young one (an import or sync in flight)."""

from __future__ import annotations

import io
import os
import random
import re
import time
from pathlib import Path

import pytest
from huggingface_hub import snapshot_download

from mirror import gc
from mirror.storage import layout
from registry.types import RepoRef

from helpers.content import sha256, write_tree

from .conftest import Instance, model_files

DAY = 24 * 3600


def _two_repos_sharing_a_blob(inst: Instance, tmp_path: Path) -> dict[str, object]:
    shared = random.Random(7).randbytes(50_000)
    a_files = {**model_files(21), "shared.bin": shared}
    b_files = {**model_files(22), "shared.bin": shared}
    a = inst.import_folder(write_tree(tmp_path / "a", a_files), "acme/a")
    b = inst.import_folder(write_tree(tmp_path / "b", b_files), "acme/b")
    return {"a": a, "b": b, "a_files": a_files, "b_files": b_files, "shared": sha256(shared)}


def _orphan(inst: Instance, data: bytes) -> str:
    """Bytes ingested into the store and never published (an interrupted import)."""
    digests = inst.svc.store.ingest_file(io.BytesIO(data), size=len(data))
    assert digests.sha256 == sha256(data)
    return str(digests.sha256)


def _age(inst: Instance, key: str, seconds: float) -> None:
    path = inst.data_dir / "store" / key
    t = time.time() - seconds
    os.utime(path, (t, t))


def _downloaded(inst: Instance, repo_id: str, cache: Path) -> dict[str, bytes]:
    folder = Path(snapshot_download(repo_id, endpoint=inst.url, cache_dir=cache))
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _summary(out: str) -> tuple[int, int, int, int, int]:
    m = re.search(r"(\d+) blobs referenced; (\d+) unreferenced blobs and (\d+) stale uploads swept; "
                  r"(?:would free|freed) (\d+) bytes; (\d+) young blobs kept", out)
    assert m, out
    return tuple(int(g) for g in m.groups())  # type: ignore[return-value]


@pytest.mark.integration
def test_gc_sweeps_only_old_orphans_and_after_a_removal_only_the_removed_snapshots_own_blobs(
    make_instance, tmp_path: Path
) -> None:
    inst: Instance = make_instance()
    s = _two_repos_sharing_a_blob(inst, tmp_path)
    a, b = str(s["a"]), str(s["b"])
    old_data, young_data = os.urandom(30_000), os.urandom(20_000)
    old, young = _orphan(inst, old_data), _orphan(inst, young_data)
    _age(inst, layout.blob_key(old), 2 * DAY)
    # an upload abandoned long ago (a crashed writer) goes too
    stale_upload = layout.upload_key()
    inst.svc.store.driver.put_bytes(stale_upload, b"x" * 1234)
    _age(inst, stale_upload, 2 * DAY)
    a_shas = {f.sha256 for f in inst.manifest("acme/a", a).files}
    b_shas = {f.sha256 for f in inst.manifest("acme/b", b).files}
    assert s["shared"] in a_shas & b_shas
    referenced = a_shas | b_shas
    before = inst.blob_keys()
    assert before == {layout.blob_key(x) for x in referenced | {old, young}}
    inst.serve()

    dry = inst.cli("gc", "--dry-run")
    assert dry.code == 0, dry
    assert "would free" in dry.out
    assert _summary(dry.out) == (len(referenced), 1, 1, len(old_data) + 1234, 1)
    assert inst.blob_keys() == before and inst.exists(stale_upload)

    run = inst.cli("gc")
    assert run.code == 0, run
    assert _summary(run.out) == (len(referenced), 1, 1, len(old_data) + 1234, 1)
    assert inst.blob_keys() == before - {layout.blob_key(old)}
    assert not inst.exists(stale_upload)
    assert inst.exists(layout.blob_key(young))
    assert _downloaded(inst, "acme/a", tmp_path / "hf-a") == s["a_files"]
    assert _downloaded(inst, "acme/b", tmp_path / "hf-b") == s["b_files"]
    again = inst.cli("gc")
    assert _summary(again.out) == (len(referenced), 0, 0, 0, 1)

    a_sizes = {f.sha256: f.size for f in inst.manifest("acme/a", a).files}
    # remove acme/a's snapshot through the admin API, then gc without a grace period
    repo_a = RepoRef.parse("model", "acme/a")
    snapshot_keys = [key(repo_a, str(a)) for key in (layout.manifest_key, layout.signature_key, layout.provenance_key)]
    assert all(inst.exists(k) for k in snapshot_keys)
    r = inst.admin("DELETE", f"/repos/model/acme/a/snapshots/{a}")
    assert r.status_code == 200, r.text
    assert r.json()["refs_removed"] == ["main"]
    assert inst.http.get("/api/models/acme/a").status_code == 404
    assert not any(inst.exists(k) for k in snapshot_keys)  # nothing of the snapshot is left for rebuild-index
    assert not inst.exists(layout.ref_key(repo_a, "refs/heads/main"))
    only_a = a_shas - b_shas
    expected_freed = sum(a_sizes[x] for x in only_a) + len(young_data)
    swept = inst.cli("gc", "--grace-hours", "0")
    assert swept.code == 0, swept
    assert _summary(swept.out) == (len(b_shas), len(only_a) + 1, 0, expected_freed, 0)
    assert inst.blob_keys() == {layout.blob_key(x) for x in b_shas}
    assert inst.exists(layout.blob_key(str(s["shared"])))
    assert _downloaded(inst, "acme/b", tmp_path / "hf-b2") == s["b_files"]
    assert inst.cli("verify").code == 0


@pytest.mark.integration  # moto's S3 server
def test_gc_on_s3_keeps_young_orphans_and_sweeps_them_without_a_grace_period(make_instance, tmp_path: Path) -> None:
    inst: Instance = make_instance("s3")
    s = _two_repos_sharing_a_blob(inst, tmp_path)
    engine, store = inst.svc.engine, inst.svc.store
    orphan_data = os.urandom(40_000)
    orphan = _orphan(inst, orphan_data)
    referenced = {f.sha256 for r in ("a", "b") for f in inst.manifest(f"acme/{r}", str(s[r])).files}
    assert inst.blob_keys() == {layout.blob_key(x) for x in referenced | {orphan}}

    kept = gc.collect(engine, store, grace_seconds=3600)
    assert (kept.swept, kept.kept_young, kept.bytes_freed, kept.referenced) == ([], 1, 0, len(referenced))
    dry = gc.collect(engine, store, grace_seconds=0, dry_run=True)
    assert (dry.swept, dry.bytes_freed) == ([orphan], len(orphan_data))
    assert store.has(orphan)
    done = gc.collect(engine, store, grace_seconds=0)
    assert (done.swept, done.bytes_freed, done.kept_young) == ([orphan], len(orphan_data), 0)
    assert not store.has(orphan)
    assert all(store.has(x) for x in referenced)
    assert inst.blob_keys() == {layout.blob_key(x) for x in referenced}
    for r in ("a", "b"):
        for f in inst.manifest(f"acme/{r}", str(s[r])).files:
            with store.open(f.sha256) as fh:
                assert fh.read() == s[f"{r}_files"][f.path]  # type: ignore[index]


def test_gc_keeps_blobs_of_a_manifest_in_the_store_even_if_the_catalog_lost_it(make_instance, tmp_path: Path) -> None:
    """The mark phase reads the store's manifests too (the catalog may be mid-rebuild)."""
    from registry import snapshots
    from registry.audit import Actor
    from registry.db import session_scope
    from registry.types import RepoRef

    inst: Instance = make_instance()
    s = _two_repos_sharing_a_blob(inst, tmp_path)
    with session_scope(inst.svc.engine) as session:  # unpublish in the DB only: the manifest stays in the store
        snapshots.remove_snapshot(session, RepoRef.parse("model", "acme/a"), str(s["a"]), actor=Actor("t", "admin"))
    report = gc.collect(inst.svc.engine, inst.svc.store, grace_seconds=0)
    assert report.swept == []
    assert all(inst.svc.store.has(f.sha256) for f in inst.manifest("acme/a", str(s["a"])).files)
