"""``hubgate verify`` (mirror/scrub.py) on the local store and on S3: a flipped byte or a missing blob is
found, the blob quarantined, every snapshot using it refused with a 503 naming it (never wrong bytes),
and a re-import makes it available again. The serving path refuses a blob whose size is wrong."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download, snapshot_download

from mirror import scrub
from mirror.storage import layout

from helpers.content import sha256, write_tree

from .conftest import (
    Instance,
    flip,
    http_error_chain,
    model_files,
    unique_repo,
)

STORES = ["local", "s3"]


def _setup(inst: Instance, tmp_path: Path) -> dict[str, object]:
    """acme/scrubbed and acme/sibling share model.safetensors; acme/bystander shares nothing with them."""
    files = model_files(11)
    sibling_files = {**model_files(12), "model.safetensors": files["model.safetensors"]}
    bystander_files = model_files(13)
    folder = write_tree(tmp_path / "scrubbed", files)
    return {
        "files": files, "folder": folder, "sibling_files": sibling_files, "bystander_files": bystander_files,
        "commit": inst.import_folder(folder, "acme/scrubbed"),
        "sibling": inst.import_folder(write_tree(tmp_path / "sibling", sibling_files), "acme/sibling"),
        "bystander": inst.import_folder(write_tree(tmp_path / "bystander", bystander_files), "acme/bystander"),
        "weights_sha": sha256(files["model.safetensors"]),
    }


def _lines(out: str, kind: str) -> list[str]:
    return [line.split()[1] for line in out.splitlines() if line.startswith(kind + " ")]


def _assert_client_saw_503(exc: BaseException, message: str) -> None:
    """The HF client's error carries hubgate's 503 answer, with ``message`` (e.g. the snapshot's name)."""
    responses = [getattr(e, "response", None) for e in http_error_chain(exc)]
    statuses = [r.status_code for r in responses if r is not None]
    assert 503 in statuses, (exc, statuses)
    assert any(message in str(e) for e in http_error_chain(exc)), http_error_chain(exc)


def _assert_refused(inst: Instance, repo_id: str, commit: str, path: str) -> None:
    """Every way a client could ask for the file gets a 503 naming the snapshot, never bytes."""
    for rev in ("main", commit):
        for method in ("HEAD", "GET"):
            r = inst.http.request(method, f"/{repo_id}/resolve/{rev}/{path}")
            assert r.status_code == 503, (method, rev, r.status_code, r.headers)
            assert f"{repo_id}@{commit}" in r.headers.get("x-error-message", ""), r.headers
            if method == "GET":
                assert f"{repo_id}@{commit}" in r.json()["error"]
    r = inst.http.get(f"/api/models/{repo_id}/revision/{commit}")
    assert r.status_code == 503 and f"{repo_id}@{commit}" in r.json()["error"]


@pytest.mark.integration
@pytest.mark.parametrize("storage", STORES)
def test_verify_quarantines_a_flipped_blob_and_refuses_its_snapshots_until_reimported(
    make_instance, tmp_path: Path, storage: str
) -> None:
    inst: Instance = make_instance(storage)
    s = _setup(inst, tmp_path)
    commit, sibling, bystander, sha = s["commit"], s["sibling"], s["bystander"], s["weights_sha"]
    files = s["files"]
    assert isinstance(files, dict) and isinstance(sha, str) and isinstance(commit, str) and isinstance(sibling, str)
    inst.serve()
    first = hf_hub_download("acme/scrubbed", "model.safetensors", endpoint=inst.url, cache_dir=tmp_path / "hf0")
    assert Path(first).read_bytes() == files["model.safetensors"]

    clean = inst.cli("verify")
    assert clean.code == 0, clean
    n_blobs = len(inst.blob_keys())
    assert f"checked {n_blobs} blobs" in clean.out and "0 corrupt, 0 missing" in clean.out

    key = layout.blob_key(sha)
    good = inst.read(key)
    inst.write(key, flip(good))

    dry = inst.cli("verify", "--dry-run")
    assert dry.code == 3, dry
    assert _lines(dry.out, "corrupt") == [sha] and "quarantined" not in dry.out and _lines(dry.out, "unavailable") == []
    assert inst.exists(key) and not inst.exists(layout.quarantine_key(sha))
    assert inst.snapshot_state("acme/scrubbed", commit) == "available"

    report = inst.cli("verify")
    assert report.code == 3, report
    assert _lines(report.out, "corrupt") == [sha]  # exactly that blob
    assert f"corrupt  {sha} (quarantined)" in report.out
    assert _lines(report.out, "missing") == []
    assert sorted(_lines(report.out, "unavailable")) == sorted(
        [f"model:acme/scrubbed@{commit}", f"model:acme/sibling@{sibling}"])
    assert not inst.exists(key)
    assert inst.read(layout.quarantine_key(sha)) == flip(good)  # kept for inspection
    assert inst.snapshot_state("acme/scrubbed", commit) == "unavailable"
    assert inst.snapshot_state("acme/sibling", sibling) == "unavailable"
    assert inst.snapshot_state("acme/bystander", bystander) == "available"

    # a real client gets an error, not bytes; every file of the snapshot is refused, the bystander still served
    with pytest.raises(Exception) as failed:  # which class varies; the cause is checked
        hf_hub_download("acme/scrubbed", "model.safetensors", endpoint=inst.url, cache_dir=tmp_path / "hf1")
    _assert_client_saw_503(failed.value, f"acme/scrubbed@{commit}")
    assert not list((tmp_path / "hf1").rglob("model.safetensors"))
    _assert_refused(inst, "acme/scrubbed", commit, "model.safetensors")
    _assert_refused(inst, "acme/scrubbed", commit, "config.json")
    _assert_refused(inst, "acme/sibling", sibling, "model.safetensors")
    by = snapshot_download("acme/bystander", endpoint=inst.url, cache_dir=tmp_path / "hf2")
    assert (Path(by) / "model.safetensors").read_bytes() == s["bystander_files"]["model.safetensors"]  # type: ignore[index]
    listing = inst.admin("GET", "/repos/model/acme/scrubbed/snapshots").json()
    assert [(x["commit"], x["state"]) for x in listing] == [(commit, "unavailable")]

    # still broken on the next run: the blob is now missing
    again = inst.cli("verify")
    assert again.code == 3 and _lines(again.out, "missing") == [sha] and _lines(again.out, "corrupt") == [], again

    # repair: re-import the same folder -> both snapshots using the blob come back, with the right bytes
    assert inst.import_folder(s["folder"], "acme/scrubbed") == commit  # type: ignore[arg-type]
    assert inst.snapshot_state("acme/scrubbed", commit) == "available"
    assert inst.snapshot_state("acme/sibling", sibling) == "available"
    assert inst.read(key) == good
    fixed = snapshot_download("acme/scrubbed", endpoint=inst.url, cache_dir=tmp_path / "hf3")
    assert {p.relative_to(fixed).as_posix(): p.read_bytes() for p in Path(fixed).rglob("*") if p.is_file()} == files
    r = inst.http.get(f"/acme/sibling/resolve/{sibling}/model.safetensors")
    assert r.status_code == 200 and r.content == good
    final = inst.cli("verify")
    assert final.code == 0, final


@pytest.mark.integration
@pytest.mark.parametrize("storage", STORES)
def test_verify_reports_a_missing_blob_as_missing(make_instance, tmp_path: Path, storage: str) -> None:
    inst: Instance = make_instance(storage)
    s = _setup(inst, tmp_path)
    commit, sha = str(s["commit"]), sha256(s["files"]["config.json"])  # type: ignore[index]
    inst.remove(layout.blob_key(sha))
    inst.serve()

    report = inst.cli("verify")
    assert report.code == 3, report
    assert _lines(report.out, "missing") == [sha] and _lines(report.out, "corrupt") == []
    assert _lines(report.out, "unavailable") == [f"model:acme/scrubbed@{commit}"]
    assert not inst.exists(layout.quarantine_key(sha))
    _assert_refused(inst, "acme/scrubbed", commit, "config.json")
    _assert_refused(inst, "acme/scrubbed", commit, "model.safetensors")

    assert inst.import_folder(s["folder"], "acme/scrubbed") == commit  # type: ignore[arg-type]
    r = inst.http.get("/acme/scrubbed/resolve/main/config.json")
    assert r.status_code == 200 and r.content == s["files"]["config.json"]  # type: ignore[index]
    assert inst.cli("verify").code == 0


@pytest.mark.integration
@pytest.mark.parametrize("storage", STORES)
def test_serving_refuses_a_blob_whose_stored_size_differs_from_its_manifest(
    make_instance, tmp_path: Path, storage: str
) -> None:
    inst: Instance = make_instance(storage)
    s = _setup(inst, tmp_path)
    sha, commit = str(s["weights_sha"]), str(s["commit"])
    key = layout.blob_key(sha)
    good = inst.read(key)
    inst.serve()
    assert inst.http.get("/acme/scrubbed/resolve/main/model.safetensors").content == good

    for stored in (good[: len(good) // 2], good + b"trailing garbage"):
        inst.write(key, stored)
        for rev in ("main", commit):
            url = f"/acme/scrubbed/resolve/{rev}/model.safetensors"
            for headers in ({}, {"Range": "bytes=0-99"}, {"Range": f"bytes={len(good) - 100}-"}):
                r = inst.http.get(url, headers=headers)
                assert r.status_code == 503, (len(stored), rev, headers, r.status_code)
                assert r.content != stored and not good.startswith(r.content[:10] or b"x")
        with pytest.raises(Exception) as failed:  # which class varies; the cause is checked
            hf_hub_download("acme/scrubbed", "model.safetensors", endpoint=inst.url,
                            cache_dir=tmp_path / f"hf-{len(stored)}")
        _assert_client_saw_503(failed.value, f"{sha} failed its size check")
        assert not list((tmp_path / f"hf-{len(stored)}").rglob("model.safetensors"))
    # the scrub finds it too (wrong size) and quarantines it
    report = inst.cli("verify")
    assert report.code == 3 and _lines(report.out, "corrupt") == [sha], report


def test_verify_sample_and_rate_limit(make_instance, tmp_path: Path) -> None:
    inst: Instance = make_instance()
    _setup(inst, tmp_path)
    engine, store = inst.svc.engine, inst.svc.store
    n = len(inst.blob_keys())
    total = sum(store.stat(layout.digest_from_blob_key(k)).size for k in inst.blob_keys())
    assert n >= 8
    half = scrub.scrub(engine, store, sample=0.5)
    assert half.checked == round(n * 0.5) and half.ok
    assert scrub.scrub(engine, store, sample=0.01).checked == 1
    out = inst.cli("verify", "--sample", "0.25")
    assert out.code == 0 and f"checked {round(n * 0.25)} blobs" in out.out, out

    rate = total / 0.6  # bytes per second: a full pass must take about 0.6 s
    start = time.monotonic()
    full = scrub.scrub(engine, store, bytes_per_second=rate)
    elapsed = time.monotonic() - start
    assert full.checked == n and full.bytes_checked == total
    assert elapsed >= 0.5, elapsed
    start = time.monotonic()
    cli = inst.cli("verify", "--rate-mb", f"{rate / 1e6:.6f}")
    assert cli.code == 0 and time.monotonic() - start >= 0.5, cli
    assert re.search(rf"checked {n} blobs \({total} bytes\)", cli.out), cli.out


@pytest.mark.integration
def test_a_snapshot_already_served_by_commit_is_refused_by_commit_after_the_scrub(
    make_instance, tmp_path: Path
) -> None:
    """Clients pin revisions by sha; the server caches a sha's snapshot. After ``hubgate verify`` (another
    process) marks the snapshot unavailable, the running server must refuse it by sha too, naming it."""
    inst: Instance = make_instance()
    s = _setup(inst, tmp_path)
    commit, sha = str(s["commit"]), str(s["weights_sha"])
    inst.serve()
    url = f"/acme/scrubbed/resolve/{commit}/model.safetensors"
    assert inst.http.get(url).status_code == 200  # served (and cached) by sha before the scrub
    inst.write(layout.blob_key(sha), flip(inst.read(layout.blob_key(sha))))
    assert inst.cli("verify").code == 3
    get = inst.http.get(url)
    assert get.status_code == 503 and get.content != inst.read(layout.quarantine_key(sha))  # never wrong bytes
    for method in ("HEAD", "GET"):
        r = inst.http.request(method, url)
        assert r.status_code == 503, (method, r.status_code, r.headers)
        assert f"acme/scrubbed@{commit}" in r.headers.get("x-error-message", ""), (method, r.headers)
    assert inst.http.get(f"/api/models/acme/scrubbed/revision/{commit}").status_code == 503


@pytest.mark.integration
def test_verify_repair_refetches_a_missing_blob_from_the_upstream(make_instance, fake_hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from api.app import build_worker

    inst: Instance = make_instance(upstream_url=fake_hub.url)
    repo = unique_repo("repair")
    files = model_files(61)
    commit = fake_hub.create_repo(repo, files).sha
    made = inst.cli("request", repo)
    assert made.code == 0, made
    request_id = json.loads(made.out)["id"]
    assert inst.cli("approve", str(request_id)).code == 0
    worker = build_worker(inst.svc)
    while worker.run_once():
        pass
    assert inst.snapshot_state(repo, commit) == "available"

    sha = inst.sha_of(repo, commit, "model.safetensors")
    inst.remove(layout.blob_key(sha))
    broken = inst.cli("verify")
    assert broken.code == 3 and _lines(broken.out, "missing") == [sha], broken
    assert inst.snapshot_state(repo, commit) == "unavailable"

    repaired = inst.cli("verify", "--repair")
    assert repaired.code == 0, repaired
    assert _lines(repaired.out, "repaired") == [f"model:{repo}@{commit}"]
    assert inst.read(layout.blob_key(sha)) == files["model.safetensors"]
    assert inst.snapshot_state(repo, commit) == "available"
    inst.serve()
    local = hf_hub_download(repo, "model.safetensors", endpoint=inst.url, cache_dir=tmp_path / "hf")
    assert Path(local).read_bytes() == files["model.safetensors"]


def test_verify_repair_on_a_sealed_side_names_the_missing_upstream(make_instance, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst: Instance = make_instance(upstream_url="")  # a sealed side
    s = _setup(inst, tmp_path)
    inst.remove(layout.blob_key(str(s["weights_sha"])))
    assert inst.cli("verify").code == 3
    repaired = inst.cli("verify", "--repair")
    assert repaired.code not in (0, -1), repaired
    assert "upstream" in repaired.err.lower()
