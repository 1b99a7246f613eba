"""The sync itself, against the fake upstream: skip stored blobs, verify every byte, resume, parallel
ranges, publish atomically, show progress, survive 429s, keep the upstream token off the CDN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from huggingface_hub import snapshot_download
from sqlmodel import Session, select

from fakes.fake_hub import FakeHub
from helpers.content import safetensors_bytes
from registry.models import Job, KnownBlob

from .conftest import (
    UPSTREAM_TOKEN,
    BackgroundWorker,
    Hubgate,
    model_files,
    small_files,
    unique_repo,
    wait_for,
)

pytestmark = pytest.mark.integration


def run_with_options(hg: Hubgate, **options: Any) -> int:
    """Run the queue with a Syncer built with non-default SyncOptions."""
    from mirror.sync import SyncOptions, Syncer
    from mirror.worker import Worker

    svc = hg.svc
    syncer = Syncer(svc.engine, svc.store, svc.upstream(), SyncOptions(**options), signer=svc.signer)
    worker = Worker(svc.engine, syncer, lease_seconds=30)
    ran = 0
    while worker.run_once():
        ran += 1
    return ran


def served(hg: Hubgate, repo: str, revision: str, path: str) -> httpx.Response:
    return hg.client.get(f"/{repo}/resolve/{revision}/{path}")


def assert_invisible(hg: Hubgate, repo: str, commit: str) -> None:
    r = hg.client.get(f"/api/models/{repo}")
    assert (r.status_code, r.headers.get("x-error-code")) == (404, "RepoNotFound"), r.text
    r = hg.client.head(f"/{repo}/resolve/{commit}/README.md")
    assert r.status_code == 404
    assert hg.api("GET", f"/repos/model/{repo}/snapshots").status_code == 404
    assert not hg.manifest_exists(repo, commit)


def test_a_second_repo_only_downloads_the_blobs_not_yet_stored(fake_hub: FakeHub, hubgate: Hubgate,
                                                               tiny_files: dict[str, bytes]) -> None:
    a, b = unique_repo("share-a"), unique_repo("share-b")
    ca = fake_hub.create_repo(a, model_files(tiny_files))
    pk = hubgate.request(a)["id"]  # reads config.json (auto_map) once: not part of the sync
    mark = fake_hub.log.mark()
    assert hubgate.approve_and_sync(pk)["state"] == "available"
    for f in ca.files.values():
        assert len(fake_hub.log.content_gets(f.sha256, mark)) == (1 if f.size else 0), f.path

    cb = fake_hub.create_repo(b, model_files(tiny_files, license="apache-2.0", extra={"notes.txt": b"b only\n"}))
    pk = hubgate.request(b)["id"]
    mark = fake_hub.log.mark()
    done = hubgate.approve_and_sync(pk)
    assert done["state"] == "available"
    fetched = {e.sha256 for e in fake_hub.log.since(mark) if e.is_content_get}
    assert fetched == {cb.files["README.md"].sha256, cb.files["notes.txt"].sha256}
    assert done["progress"]["files_done"] == done["progress"]["files_total"] == len(cb.files)
    for path, f in cb.files.items():  # the skipped files are served all the same
        assert served(hubgate, b, "main", path).content == f.read_bytes(), path


def test_an_already_mirrored_commit_can_be_requested_again_for_another_ref(fake_hub: FakeHub,
                                                                           hubgate: Hubgate) -> None:
    repo = unique_repo("again")
    a = fake_hub.create_repo(repo, small_files(58))
    assert hubgate.approve_and_sync(hubgate.request(repo)["id"])["state"] == "available"
    fake_hub.tag(repo, "v1.0", a.sha)
    pk = hubgate.request(repo, "refs/tags/v1.0")["id"]
    mark = fake_hub.log.mark()
    done = hubgate.approve_and_sync(pk)
    assert done["state"] == "available", done["error"]
    assert [e for e in fake_hub.log.since(mark) if e.is_content_get] == []  # nothing fetched again
    assert hubgate.client.head(f"/{repo}/resolve/v1.0/data/part-0.txt").headers["x-repo-commit"] == a.sha
    assert hubgate.approve_and_sync(hubgate.request(repo, a.sha)["id"])["state"] == "available"


@pytest.mark.parametrize("fault, path, message", [
    ("corrupt", "model.safetensors", "sha256 mismatch"),
    ("corrupt", "config.json", "git blob id mismatch"),
    ("pad", "tokenizer.json", "size mismatch"),
    ("pad", "model.safetensors", "size mismatch"),
])
def test_every_file_is_verified_and_nothing_is_published_on_a_mismatch(
        fake_hub: FakeHub, hubgate: Hubgate, tiny_files: dict[str, bytes], fault: str, path: str, message: str) -> None:
    repo = unique_repo("verify")
    commit = fake_hub.create_repo(repo, model_files(tiny_files))
    bad = commit.files[path]
    req = hubgate.request(repo)
    if fault == "corrupt":
        fake_hub.corrupt(bad.sha256)
    else:
        fake_hub.pad(bad.sha256, b"\n")
    try:
        failed = hubgate.approve_and_sync(req["id"])
    finally:
        fake_hub.corrupt(bad.sha256, on=False)
        fake_hub.pad(bad.sha256, None)

    assert failed["state"] == "failed"
    assert message in failed["error"], failed["error"]
    assert_invisible(hubgate, repo, commit.sha)
    assert not hubgate.svc.store.has(bad.sha256)
    with Session(hubgate.svc.engine) as session:
        assert session.get(KnownBlob, bad.sha256) is None
        job = session.exec(select(Job)).one()
    assert job.state == "failed" and message in (job.last_error or "")


def test_a_connection_cut_mid_file_resumes_with_a_range_request(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("resume")
    big = safetensors_bytes(3 * 1024 * 1024 + 17, 129)
    commit = fake_hub.create_repo(repo, {"README.md": b"---\nlicense: mit\n---\n", "weights.safetensors": big})
    f = commit.files["weights.safetensors"]
    fake_hub.cut_once(f.sha256, 1024 * 1024 + 5)
    mark = fake_hub.log.mark()
    assert hubgate.approve_and_sync(hubgate.request(repo)["id"])["state"] == "available"

    gets = fake_hub.log.content_gets(f.sha256, mark)
    assert [(g.origin, g.status, g.complete) for g in gets] == [("cdn", 200, False), ("cdn", 206, True)]
    resumed_at = int(gets[1].range.removeprefix("bytes=").rstrip("-"))  # type: ignore[union-attr]
    assert 0 < resumed_at <= 1024 * 1024 + 5
    assert gets[0].bytes_sent + gets[1].bytes_sent < 2 * len(big), "resumed, not restarted"
    assert served(hubgate, repo, "main", "weights.safetensors").content == big


def test_big_files_are_fetched_as_parallel_ranges(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("ranges")
    big = safetensors_bytes(5 * 1024 * 1024 + 123, 146)
    commit = fake_hub.create_repo(repo, {"README.md": b"---\nlicense: mit\n---\n", "model.safetensors": big})
    f = commit.files["model.safetensors"]
    mark = fake_hub.log.mark()
    fake_hub.cut_once(f.sha256, 300 * 1024, ranged=True)  # one part is cut short once: it is fetched again whole
    hubgate.approve(hubgate.request(repo)["id"])
    # a window of 2 x 2 parts of 6: buffers of stored parts are reused for later ones
    assert run_with_options(hubgate, part_size=1024 * 1024, parallel_threshold=2 * 1024 * 1024, range_workers=2) == 1

    gets = fake_hub.log.content_gets(f.sha256, mark)
    assert [g.complete for g in gets].count(False) == 1 and len(gets) == 7
    parts = sorted((g for g in gets if g.complete), key=lambda e: int(e.range.split("=")[1].split("-")[0]))
    assert len(parts) == 6 and all(p.status == 206 and p.origin == "cdn" for p in parts)
    spans = [tuple(int(x) for x in p.range.removeprefix("bytes=").split("-")) for p in parts]  # type: ignore[union-attr]
    assert spans[0][0] == 0 and spans[-1][1] == len(big) - 1
    assert all(b[0] == a[1] + 1 for a, b in zip(spans, spans[1:])), spans
    assert served(hubgate, repo, "main", "model.safetensors").content == big

    # The same path verifies: one flipped byte in one part fails the whole file.
    repo2 = unique_repo("ranges-bad")
    other = safetensors_bytes(5 * 1024 * 1024 + 7, 162)
    c2 = fake_hub.create_repo(repo2, {"model.safetensors": other})
    fake_hub.corrupt(c2.files["model.safetensors"].sha256)
    try:
        pk = hubgate.request(repo2)["id"]
        hubgate.approve(pk)
        run_with_options(hubgate, part_size=1024 * 1024, parallel_threshold=2 * 1024 * 1024, range_workers=3)
    finally:
        fake_hub.corrupt(c2.files["model.safetensors"].sha256, on=False)
    doc = hubgate.get_request(pk)
    assert doc["state"] == "failed" and "sha256 mismatch" in doc["error"]

    # A part with more bytes than the range asked for fails the file, naming the part.
    repo3 = unique_repo("ranges-long")
    third = safetensors_bytes(5 * 1024 * 1024 + 9, 171)
    c3 = fake_hub.create_repo(repo3, {"model.safetensors": third})
    fake_hub.pad(c3.files["model.safetensors"].sha256, b"!", ranged=True)
    try:
        pk = hubgate.request(repo3)["id"]
        hubgate.approve(pk)
        run_with_options(hubgate, part_size=1024 * 1024, parallel_threshold=2 * 1024 * 1024, range_workers=3)
    finally:
        fake_hub.pad(c3.files["model.safetensors"].sha256, None, ranged=True)
    doc = hubgate.get_request(pk)
    assert doc["state"] == "failed" and "came back with more than 1048576 bytes" in doc["error"], doc["error"]


def test_a_big_file_with_fewer_parts_than_the_range_window(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("few-parts")
    big = safetensors_bytes(3 * 1024 * 1024 + 1, 177)  # 4 parts of 1 MiB, window of 2 x 3
    fake_hub.create_repo(repo, {"model.safetensors": big})
    pk = hubgate.request(repo)["id"]
    hubgate.approve(pk)
    run_with_options(hubgate, part_size=1024 * 1024, parallel_threshold=2 * 1024 * 1024, range_workers=3)
    doc = hubgate.get_request(pk)
    assert doc["state"] == "available", doc["error"]
    assert served(hubgate, repo, "main", "model.safetensors").content == big


def test_progress_is_visible_while_syncing_and_nothing_is_published_before_the_end(
        fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("progress")
    slow = safetensors_bytes(3 * 1024 * 1024, 190)
    files = {**small_files(50), "slow.safetensors": slow}
    commit = fake_hub.create_repo(repo, files)
    total = sum(map(len, files.values()))
    fake_hub.throttle(commit.files["slow.safetensors"].sha256, 1024 * 1024)
    pk = hubgate.request(repo)["id"]
    hubgate.approve(pk)
    seen: list[dict[str, Any]] = []
    try:
        with BackgroundWorker(hubgate) as worker:
            def partial() -> bool:
                doc = hubgate.get_request(pk)
                seen.append(doc)
                p = doc["progress"]
                return doc["state"] == "syncing" and p["files_done"] >= 1 and 0 < p["bytes_done"] < p["bytes_total"]

            wait_for(partial, timeout=20, interval=0.1, what="partial progress")
            assert seen[-1]["progress"]["bytes_total"] == total
            assert seen[-1]["progress"]["files_total"] == len(files)
            assert seen[-1]["progress"]["phase"] == "fetching"
            assert_invisible(hubgate, repo, commit.sha)
            worker.join()
    finally:
        fake_hub.throttle(commit.files["slow.safetensors"].sha256, None)
    done = hubgate.get_request(pk)
    assert done["state"] == "available"
    assert done["progress"] == {"files_done": len(files), "files_total": len(files), "bytes_done": total,
                                "bytes_total": total, "phase": ""}
    assert served(hubgate, repo, "main", "slow.safetensors").content == slow
    assert hubgate.manifest_exists(repo, commit.sha)
    states = [d["state"] for d in seen]
    assert "syncing" in states and "available" not in states


def _fail_inside_the_publish_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last step inside the publishing transaction (marking the request available) fails."""
    from registry import workflow

    def broken_finish(session, pk):  # type: ignore[no-untyped-def]
        raise RuntimeError("injected failure inside the publish transaction")

    monkeypatch.setattr(workflow, "finish", broken_finish)


def test_publish_is_one_transaction(fake_hub: FakeHub, hubgate: Hubgate, monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshot rows, refs and the request's ``available`` commit together or not at all."""
    repo = unique_repo("atomic")
    a = fake_hub.create_repo(repo, small_files(51))
    fake_hub.tag(repo, "v1", a.sha)
    assert hubgate.approve_and_sync(hubgate.request(repo, "refs/tags/v1")["id"])["state"] == "available"
    b = fake_hub.commit(repo, {"data/part-0.txt": b"b\n"})
    fake_hub.tag(repo, "v1", b.sha)

    request_id = hubgate.request(repo, "v1")["id"]
    _fail_inside_the_publish_transaction(monkeypatch)
    failed = hubgate.approve_and_sync(request_id)
    assert failed["state"] == "failed" and "injected failure" in failed["error"]
    assert [s["commit"] for s in hubgate.api("GET", f"/repos/model/{repo}/snapshots").json()] == [a.sha]
    r = hubgate.client.head(f"/{repo}/resolve/{b.sha}/data/part-0.txt")
    assert (r.status_code, r.headers.get("x-error-code")) == (404, "RevisionNotFound")
    assert hubgate.client.head(f"/{repo}/resolve/v1/data/part-0.txt").headers["x-repo-commit"] == a.sha
    assert hubgate.client.head(f"/{repo}/resolve/main/data/part-0.txt").headers["x-repo-commit"] == a.sha


def test_a_failed_publish_leaves_no_manifest_for_rebuild_index_to_publish(
        fake_hub: FakeHub, hubgate: Hubgate, monkeypatch: pytest.MonkeyPatch) -> None:
    from mirror.rebuild import rebuild_index

    repo = unique_repo("orphan")
    a = fake_hub.create_repo(repo, small_files(52))
    fake_hub.tag(repo, "v1", a.sha)
    assert hubgate.approve_and_sync(hubgate.request(repo, "refs/tags/v1")["id"])["state"] == "available"
    b = fake_hub.commit(repo, {"data/part-0.txt": b"b\n"})
    fake_hub.tag(repo, "v1", b.sha)
    request_id = hubgate.request(repo, "v1")["id"]
    _fail_inside_the_publish_transaction(monkeypatch)
    assert hubgate.approve_and_sync(request_id)["state"] == "failed"
    monkeypatch.undo()

    rebuild_index(hubgate.svc.engine, hubgate.svc.store, force=True)
    hubgate.svc.cache.invalidate()
    assert hubgate.client.head(f"/{repo}/resolve/{a.sha}/data/part-0.txt").status_code == 200
    assert hubgate.client.head(f"/{repo}/resolve/{b.sha}/data/part-0.txt").status_code == 404, \
        "the commit whose publish failed became visible after rebuild-index"
    assert not hubgate.manifest_exists(repo, b.sha)


def test_429_with_retry_after_is_retried_and_succeeds(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("throttled")
    commit = fake_hub.create_repo(repo, small_files(53))
    mark = fake_hub.log.mark()
    fake_hub.rate_limit(repo, 2)
    doc = hubgate.request(repo)
    assert doc["commit"] == commit.sha
    limited = [e for e in fake_hub.log.for_repo(repo, mark) if e.status == 429]
    assert len(limited) == 2
    # Retry-After: 1 was honoured before each retry.
    after = [e for e in fake_hub.log.for_repo(repo, mark) if e.status == 200]
    assert after[0].at - limited[-1].at >= 0.9 and limited[1].at - limited[0].at >= 0.9

    fake_hub.rate_limit(repo, 2)  # and in the middle of the sync
    assert hubgate.approve_and_sync(doc["id"])["state"] == "available"
    assert len([e for e in fake_hub.log.for_repo(repo, mark) if e.status == 429]) == 4


def test_gated_repo_without_token_is_blocked_and_fails_clearly(fake_hub: FakeHub, make_hubgate) -> None:  # type: ignore[no-untyped-def]
    repo = unique_repo("gated-none")
    fake_hub.create_repo(repo, small_files(54), gated="manual")
    hubgate = make_hubgate()
    doc = hubgate.request(repo)
    assert doc["verdict"] == "blocked" and any(f["rule"] == "gated.no-token" for f in doc["findings"])
    r = hubgate.api("POST", f"/requests/{doc['id']}/approve")
    assert r.status_code == 422 and r.json()["findings"][0]["rule"] == "gated.no-token"

    # A repo that becomes gated after approval: the sync fails and says why.
    later = unique_repo("gated-later")
    fake_hub.create_repo(later, small_files(55))
    pk = hubgate.request(later)["id"]
    fake_hub.set_gated(later, "auto")
    failed = hubgate.approve_and_sync(pk)
    assert failed["state"] == "failed"
    assert "refused upstream (401)" in failed["error"] and "no upstream token is configured" in failed["error"]
    assert_invisible(hubgate, later, failed["commit"])


def test_gated_repo_with_a_wrong_token_fails_with_403(fake_hub: FakeHub, make_hubgate) -> None:  # type: ignore[no-untyped-def]
    repo = unique_repo("gated-wrong")
    fake_hub.create_repo(repo, small_files(56), gated="manual")
    hubgate = make_hubgate(upstream_token="hf_notAllowed")
    failed = hubgate.approve_and_sync(hubgate.request(repo)["id"])
    assert failed["state"] == "failed" and "refused upstream (403)" in failed["error"]
    assert "hf_notAllowed" not in failed["error"]


def test_gated_repo_with_the_token_syncs_and_the_token_never_reaches_the_cdn(
        fake_hub: FakeHub, make_hubgate, tiny_files: dict[str, bytes], hf_cache: Path,  # type: ignore[no-untyped-def]
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from api.cli import main

    repo = unique_repo("gated-ok")
    commit = fake_hub.create_repo(repo, model_files(tiny_files), gated="manual")
    hubgate = make_hubgate()
    # The operator stores the token with the CLI (encrypted at rest) before the first upstream call.
    for key, value in hubgate.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("sys.stdin", io.StringIO(UPSTREAM_TOKEN + "\n"))
    assert main(["upstream-token", "set"]) == 0
    assert UPSTREAM_TOKEN not in capsys.readouterr().out
    assert UPSTREAM_TOKEN.encode() not in b"".join(
        p.read_bytes() for p in hubgate.data_dir.rglob("*") if p.is_file())

    mark = fake_hub.log.mark()
    doc = hubgate.request(repo)
    assert any(f["rule"] == "gated" for f in doc["findings"]) and doc["verdict"] == "review"
    assert hubgate.approve_and_sync(doc["id"])["state"] == "available"

    log = fake_hub.log.for_repo(repo, mark) + [e for e in fake_hub.log.since(mark) if e.origin == "cdn"]
    resolves = [e for e in log if e.kind == "resolve"]
    cdn = [e for e in log if e.origin == "cdn"]
    lfs = {f.sha256 for f in commit.files.values() if f.lfs}
    assert resolves and all(e.authorization == f"Bearer {UPSTREAM_TOKEN}" for e in resolves)
    assert {e.sha256 for e in cdn if e.is_content_get} == lfs
    assert all(e.authorization is None and e.status in (200, 206) for e in cdn)
    # Gated upstream, so gated here (tests/access): read with a token that may (an admin's).
    folder = Path(snapshot_download(repo, endpoint=hubgate.url, cache_dir=hf_cache, token=hubgate.admin_token))
    assert (folder / "model.safetensors").read_bytes() == commit.bytes_of("model.safetensors")
    events = hubgate.api("GET", "/audit", params={"action": "secret.set"}).json()
    assert len(events) == 1 and UPSTREAM_TOKEN not in str(events)


def test_a_token_stored_while_hubgate_runs_is_used(fake_hub: FakeHub, make_hubgate, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from api.cli import main

    repo = unique_repo("gated-late-token")
    fake_hub.create_repo(repo, small_files(57), gated="manual")
    hubgate = make_hubgate()
    assert hubgate.request(repo)["verdict"] == "blocked"  # no token yet
    for key, value in hubgate.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("sys.stdin", io.StringIO(UPSTREAM_TOKEN + "\n"))
    assert main(["upstream-token", "set"]) == 0
    doc = hubgate.request(repo)
    assert any(f["rule"] == "gated" for f in doc["findings"]), doc["findings"]
    assert hubgate.approve_and_sync(doc["id"])["state"] == "available"


def test_a_tag_requested_by_its_short_name_is_published_as_a_tag(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("shorttag")
    a = fake_hub.create_repo(repo, small_files(3))
    fake_hub.tag(repo, "v2", a.sha)
    assert hubgate.approve_and_sync(hubgate.request(repo, "v2")["id"])["state"] == "available"
    refs = hubgate.client.get(f"/api/models/{repo}/refs").json()
    assert [t["name"] for t in refs["tags"]] == ["v2"] and refs["tags"][0]["targetCommit"] == a.sha
    assert "v2" not in [b["name"] for b in refs["branches"]]
