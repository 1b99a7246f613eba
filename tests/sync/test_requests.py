"""Mirror requests over the admin REST API: resolution to a full sha, the state machine, listing,
the OpenAPI document, and the repo / snapshot / ref endpoints."""

from __future__ import annotations

import pytest

from fakes.fake_hub import FakeHub

from .conftest import Hubgate, small_files, unique_repo

pytestmark = pytest.mark.integration


def test_create_resolves_the_revision_upstream_to_a_full_sha_and_records_it(
        fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("resolve")
    first = fake_hub.create_repo(repo, small_files(1))
    fake_hub.tag(repo, "v1.0", first.sha)
    second = fake_hub.commit(repo, {"data/part-0.txt": b"changed\n"})

    by_branch = hubgate.request(repo, "main", reason="baseline")
    by_tag = hubgate.request(repo, "v1.0")
    by_sha = hubgate.request(repo, first.sha)

    assert (by_branch["revision"], by_branch["commit"]) == ("main", second.sha)
    assert (by_tag["revision"], by_tag["commit"]) == ("v1.0", first.sha)
    assert (by_sha["revision"], by_sha["commit"]) == (first.sha, first.sha)
    assert by_branch["state"] == "pending" and by_branch["reason"] == "baseline"
    assert by_branch["requester"] == "test-admin"
    assert by_branch["progress"] == {"files_done": 0, "files_total": 0, "bytes_done": 0, "bytes_total": 0, "phase": ""}
    # Recorded: upstream moving on does not change what was requested.
    fake_hub.commit(repo, {"data/part-1.txt": b"moved again\n"})
    assert hubgate.get_request(by_branch["id"])["commit"] == second.sha


def test_create_for_an_unknown_repo_or_revision_is_refused(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("missing")
    r = hubgate.api("POST", "/requests", json={"repo_id": repo, "revision": "main"})
    assert r.status_code == 404, r.text
    fake_hub.create_repo(repo, small_files(2))
    r = hubgate.api("POST", "/requests", json={"repo_id": repo, "revision": "no-such-branch"})
    assert r.status_code == 404, r.text
    assert hubgate.api("GET", "/requests").json() == []


def test_states_pending_approved_syncing_available(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("states")
    commit = fake_hub.create_repo(repo, small_files(3))
    req = hubgate.request(repo)
    assert req["state"] == "pending"

    approved = hubgate.approve(req["id"])
    assert approved["state"] == "approved" and approved["decided_by"] == "test-admin"
    assert hubgate.sync() == 1

    done = hubgate.get_request(req["id"])
    assert done["state"] == "available" and done["error"] is None
    total = sum(f.size for f in commit.files.values())
    assert done["progress"] == {"files_done": len(commit.files), "files_total": len(commit.files),
                                "bytes_done": total, "bytes_total": total, "phase": ""}
    # The state change sequence, as the audit log saw it.
    events = hubgate.api("GET", "/audit", params={"target": f"request:{req['id']}"}).json()
    assert [(e["action"], e["detail"].get("after")) for e in reversed(events)] == [
        ("request.create", None), ("request.approve", "approved"), ("request.start", "syncing"),
        ("request.finish", "available")]


def test_reject_needs_a_reason_and_records_it(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("reject")
    fake_hub.create_repo(repo, small_files(4))
    req = hubgate.request(repo)
    assert hubgate.api("POST", f"/requests/{req['id']}/reject", json={}).status_code == 422
    assert hubgate.api("POST", f"/requests/{req['id']}/reject", json={"reason": ""}).status_code == 422
    r = hubgate.api("POST", f"/requests/{req['id']}/reject", json={"reason": "license not allowed"})
    assert r.status_code == 200, r.text
    doc = hubgate.get_request(req["id"])
    assert (doc["state"], doc["decision_reason"], doc["decided_by"]) == ("rejected", "license not allowed", "test-admin")
    assert hubgate.sync() == 0  # nothing was queued


def test_illegal_transitions_are_refused_with_409(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("illegal")
    fake_hub.create_repo(repo, small_files(5))
    pending = hubgate.request(repo)["id"]
    rejected = hubgate.request(repo)["id"]
    available = hubgate.request(repo)["id"]
    hubgate.api("POST", f"/requests/{rejected}/reject", json={"reason": "no"})
    hubgate.approve_and_sync(available)

    def call(pk: int, action: str) -> int:
        body = {"json": {"reason": "because"}} if action == "reject" else {}
        return hubgate.api("POST", f"/requests/{pk}/{action}", **body).status_code

    assert call(pending, "retry") == 409
    assert call(rejected, "approve") == 409
    assert call(rejected, "reject") == 409
    assert call(rejected, "retry") == 409
    assert call(available, "approve") == 409
    assert call(available, "reject") == 409
    assert call(available, "retry") == 409
    assert call(9999, "approve") == 404
    assert hubgate.get_request(pending)["state"] == "pending"
    assert hubgate.get_request(rejected)["state"] == "rejected"
    assert hubgate.get_request(available)["state"] == "available"
    approved = hubgate.request(repo)["id"]
    hubgate.approve(approved)
    assert call(approved, "approve") == 409 and call(approved, "retry") == 409
    assert hubgate.get_request(approved)["state"] == "approved"


def test_failed_sync_keeps_the_error_and_retry_requeues_it(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("retry")
    commit = fake_hub.create_repo(repo, small_files(6))
    target = commit.files["data/part-1.txt"]
    req = hubgate.request(repo)
    fake_hub.corrupt(target.sha256)
    try:
        failed = hubgate.approve_and_sync(req["id"])
    finally:
        fake_hub.corrupt(target.sha256, on=False)
    assert failed["state"] == "failed"
    assert "git blob id mismatch" in failed["error"] and "data/part-1.txt" in failed["error"]

    r = hubgate.api("POST", f"/requests/{req['id']}/retry")
    assert r.status_code == 200 and r.json()["state"] == "approved" and r.json()["error"] is None
    assert hubgate.sync() == 1
    assert hubgate.get_request(req["id"])["state"] == "available"
    actions = [e["action"] for e in hubgate.api("GET", "/audit", params={"target": f"request:{req['id']}"}).json()]
    assert actions[:3] == ["request.finish", "request.start", "request.retry"] and "request.fail" in actions


def test_a_failed_request_can_be_rejected(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("fail-reject")
    commit = fake_hub.create_repo(repo, small_files(7))
    req = hubgate.request(repo)
    fake_hub.corrupt(commit.files["data/extra.safetensors"].sha256)
    try:
        assert hubgate.approve_and_sync(req["id"])["state"] == "failed"
    finally:
        fake_hub.corrupt(commit.files["data/extra.safetensors"].sha256, on=False)
    r = hubgate.api("POST", f"/requests/{req['id']}/reject", json={"reason": "upstream is broken"})
    assert r.status_code == 200 and r.json()["state"] == "rejected"


def test_list_and_filter_requests(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    a, b = unique_repo("list-a"), unique_repo("list-b")
    fake_hub.create_repo(a, small_files(8))
    fake_hub.create_repo(b, small_files(9))
    ra1, ra2, rb = hubgate.request(a), hubgate.request(a), hubgate.request(b)
    hubgate.api("POST", f"/requests/{ra2['id']}/reject", json={"reason": "duplicate"})

    def ids(**params: object) -> list[int]:
        r = hubgate.api("GET", "/requests", params=params)
        assert r.status_code == 200, r.text
        return [d["id"] for d in r.json()]

    assert ids() == [rb["id"], ra2["id"], ra1["id"]]  # newest first
    assert ids(state="pending") == [rb["id"], ra1["id"]]
    assert ids(state="rejected") == [ra2["id"]]
    assert ids(repo_id=a) == [ra2["id"], ra1["id"]]
    assert ids(repo_id=a, state="pending") == [ra1["id"]]
    assert ids(limit=1) == [rb["id"]]
    one = hubgate.get_request(ra1["id"])
    assert {"findings", "changes", "progress", "state", "commit", "error"} <= set(one)


def test_openapi_documents_every_admin_action(hubgate: Hubgate) -> None:
    r = hubgate.client.get("/registry/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    expected = {
        ("/registry/v1/requests", "post"),  # create
        ("/registry/v1/requests", "get"),  # list and filter
        ("/registry/v1/requests/{pk}", "get"),  # one, with findings and progress
        ("/registry/v1/requests/{pk}/approve", "post"),
        ("/registry/v1/requests/{pk}/reject", "post"),
        ("/registry/v1/requests/{pk}/retry", "post"),
        ("/registry/v1/repos", "get"),
        ("/registry/v1/repos/{repo_type}/{repo_id}/snapshots", "get"),
        ("/registry/v1/repos/{repo_type}/{repo_id}/refs/{ref}", "put"),
        ("/registry/v1/repos/{repo_type}/{repo_id}/snapshots/{commit}", "delete"),
        ("/registry/v1/audit", "get"),
    }
    documented = {(p, m) for p, ops in paths.items() for m in ops}
    assert expected <= documented, sorted(expected - documented)
    params = {p["name"] for p in paths["/registry/v1/requests"]["get"].get("parameters", [])}
    assert {"state", "repo_id"} <= params
    reject_body = paths["/registry/v1/requests/{pk}/reject"]["post"]["requestBody"]
    assert reject_body["required"] is True


def test_repos_snapshots_and_pointing_a_ref_at_an_approved_commit(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("catalog")
    a = fake_hub.create_repo(repo, small_files(10))
    hubgate.approve_and_sync(hubgate.request(repo)["id"])
    b = fake_hub.commit(repo, {"data/part-0.txt": b"version b\n"})
    assert hubgate.approve_and_sync(hubgate.request(repo)["id"])["state"] == "available"

    repos = hubgate.api("GET", "/repos").json()
    assert [(s["repo_id"], s["commit"]) for s in repos if s["repo_id"] == repo] == [(repo, b.sha)]
    snaps = {s["commit"]: s for s in hubgate.api("GET", f"/repos/model/{repo}/snapshots").json()}
    assert set(snaps) == {a.sha, b.sha}
    assert snaps[b.sha]["refs"] == ["main"] and snaps[a.sha]["refs"] == []
    assert snaps[a.sha]["file_count"] == len(a.files)
    assert snaps[a.sha]["provenance"]["upstream"] == fake_hub.url

    def served_main() -> str:
        r = hubgate.client.head(f"/{repo}/resolve/main/data/part-0.txt")
        assert r.status_code == 200, r.headers
        return r.headers["x-repo-commit"]

    assert served_main() == b.sha
    # Point main back at the approved commit A.
    r = hubgate.api("PUT", f"/repos/model/{repo}/refs/main", json={"commit": a.sha})
    assert r.status_code == 200 and r.json()["changed"] is True
    assert served_main() == a.sha
    # A commit that was never approved and synced cannot be pointed at.
    r = hubgate.api("PUT", f"/repos/model/{repo}/refs/main", json={"commit": "0" * 40})
    assert r.status_code == 404
    assert served_main() == a.sha



def test_remove_snapshot_unpublishes_it(fake_hub: FakeHub, hubgate: Hubgate) -> None:
    repo = unique_repo("remove")
    a = fake_hub.create_repo(repo, small_files(11))
    hubgate.approve_and_sync(hubgate.request(repo)["id"])
    b = fake_hub.commit(repo, {"data/part-0.txt": b"version b\n"})
    assert hubgate.approve_and_sync(hubgate.request(repo)["id"])["state"] == "available"
    r = hubgate.api("PUT", f"/repos/model/{repo}/refs/main", json={"commit": a.sha})
    assert r.status_code == 200, r.text

    def served_main() -> str:
        r = hubgate.client.head(f"/{repo}/resolve/main/data/part-0.txt")
        assert r.status_code == 200, r.headers
        return r.headers["x-repo-commit"]

    # Remove snapshot B: gone for clients and from the store; A stays.
    r = hubgate.api("DELETE", f"/repos/model/{repo}/snapshots/{b.sha}")
    assert r.status_code == 200, r.text
    gone = hubgate.client.head(f"/{repo}/resolve/{b.sha}/data/part-0.txt")
    assert (gone.status_code, gone.headers.get("x-error-code")) == (404, "RevisionNotFound")
    assert not hubgate.manifest_exists(repo, b.sha) and hubgate.manifest_exists(repo, a.sha)
    assert [s["commit"] for s in hubgate.api("GET", f"/repos/model/{repo}/snapshots").json()] == [a.sha]
    assert served_main() == a.sha
    assert hubgate.api("DELETE", f"/repos/model/{repo}/snapshots/{b.sha}").status_code == 404
    assert "snapshot.remove" in {e["action"] for e in hubgate.api("GET", "/audit").json()}
