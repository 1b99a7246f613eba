"""Mirror requests across the air gap: recorded offline on the sealed side (no upstream), carried out with
``hubgate requests export``, resolved with findings on the connected side by ``hubgate requests import``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import Instance, model_files, unique_repo

pytestmark = pytest.mark.integration


def _pending(inst: Instance) -> list[dict[str, Any]]:
    r = inst.admin("GET", "/requests", params={"state": "pending"})
    assert r.status_code == 200, r.text
    return sorted(r.json(), key=lambda d: d["id"])


def _all(inst: Instance) -> list[dict[str, Any]]:
    r = inst.admin("GET", "/requests")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture
def sides(make_instance, fake_hub) -> tuple[Instance, Instance]:  # type: ignore[no-untyped-def]
    sealed = make_instance(name="high", upstream_url="", instance_name="high").serve()
    connected = make_instance(name="low", upstream_url=fake_hub.url, instance_name="low").serve()
    assert sealed.svc.settings.upstream_url is None
    return sealed, connected


def test_requests_recorded_offline_are_exported_and_imported_with_resolved_commits_and_findings(
    sides: tuple[Instance, Instance], fake_hub: Any, tmp_path: Path
) -> None:
    sealed, connected = sides
    x, y = unique_repo("x"), unique_repo("y")
    x_commit = fake_hub.create_repo(x, model_files(41)).sha
    fake_hub.create_repo(y, {**model_files(42), "extra.bin": b"\0" * 5000})
    y_v1 = fake_hub.commit(y, {"config.json": b'{"v": 1}\n'}).sha
    fake_hub.tag(y, "v1", y_v1)
    fake_hub.commit(y, {"config.json": b'{"v": 2}\n'})  # main moves on past the tag

    # sealed side: the CLI records the request offline (no upstream to resolve it)
    made = sealed.cli("request", x, "--reason", "eval baseline")
    assert made.code == 0, made
    doc = json.loads(made.out)
    assert (doc["state"], doc["commit"], doc["revision"], doc["reason"]) == ("pending", "", "main", "eval baseline")
    assert [f["rule"] for f in doc["findings"]] == ["offline"]
    assert doc["requester"].startswith("cli:")
    # ... and so does the REST API
    r = sealed.admin("POST", "/requests", json={"repo_id": y, "revision": "v1", "reason": "needs the tag",
                                                 "allow_patterns": ["*.json", "*.md"]})
    assert r.status_code == 201, r.text
    rest = r.json()
    assert (rest["state"], rest["commit"], [f["rule"] for f in rest["findings"]]) == ("pending", "", ["offline"])

    # approving there is refused: there is no commit to approve
    refused = sealed.admin("POST", f"/requests/{doc['id']}/approve")
    assert refused.status_code == 409, refused.text
    assert "offline" in refused.json()["message"]
    cli_refused = sealed.cli("approve", str(doc["id"]))
    assert cli_refused.code not in (0, -1), cli_refused
    assert "offline" in cli_refused.err
    assert [d["state"] for d in _pending(sealed)] == ["pending", "pending"]

    exported_file = tmp_path / "media" / "requests.json"
    exported_file.parent.mkdir()
    exported = sealed.cli("requests", "export", str(exported_file))
    assert exported.code == 0, exported
    assert "2 pending requests written" in exported.out
    carried = json.loads(exported_file.read_text())
    assert carried["format"] == "hubgate-requests/1" and carried["instance"] == "high"
    assert sorted((q["id"], q["repo_id"], q["revision"], q["reason"], q["allow_patterns"])
                  for q in carried["requests"]) == [
        (doc["id"], x, "main", "eval baseline", None), (rest["id"], y, "v1", "needs the tag", ["*.json", "*.md"])]

    # connected side: import resolves each to a full sha, with findings
    imported = connected.cli("requests", "import", str(exported_file))
    assert imported.code == 0, imported
    assert "2 requests imported" in imported.out
    pending = _pending(connected)
    assert len(pending) == 2
    by_repo = {d["repo_id"]: d for d in pending}
    px, py = by_repo[x], by_repo[y]
    assert (px["revision"], px["commit"], px["state"]) == ("main", x_commit, "pending")
    assert (py["revision"], py["commit"], py["allow_patterns"]) == ("v1", y_v1, ["*.json", "*.md"])
    for d, origin in ((px, doc), (py, rest)):
        assert d["findings"], d
        assert "offline" not in {f["rule"] for f in d["findings"]}
        assert d["reason"].startswith(f"[high request {origin['id']}]") and origin["reason"] in d["reason"]
        assert d["requester"] == f"high:{origin['requester']}"
    assert {(f["rule"], f["data"].get("license")) for f in px["findings"]} >= {("license.declared", "mit")}
    size = next(f for f in py["findings"] if f["rule"] == "size")  # the allow patterns were applied upstream
    assert size["data"]["files"] == 2, py["findings"]  # config.json and README.md

    # carried twice (the same media imported again): nothing new
    again = connected.cli("requests", "import", str(exported_file))
    assert again.code == 0, again
    assert "0 requests imported" in again.out
    assert len(_all(connected)) == 2

    # the imported request is an ordinary one now: approving it works
    approved = connected.admin("POST", f"/requests/{px['id']}/approve")
    assert approved.status_code == 200 and approved.json()["state"] == "approved", approved.text

    # the sealed side still holds its requests pending (the answer comes back as a bundle)
    assert len(_pending(sealed)) == 2


@pytest.mark.parametrize("content, message", [
    ("this is not json", "Cannot read requests file"),
    ('{"format": "hubgate-bundle/1", "requests": []}', "Not a hubgate requests file"),
    ('["hubgate-requests/1"]', "Not a hubgate requests file"),
    (None, "Cannot read requests file"),  # no such file
])
def test_a_malformed_requests_file_is_refused_with_exit_2(
    sides: tuple[Instance, Instance], tmp_path: Path, content: str | None, message: str
) -> None:
    _, connected = sides
    path = tmp_path / "requests.json"
    if content is not None:
        path.write_text(content)
    result = connected.cli("requests", "import", str(path))
    assert result.code == 2, result
    assert message in result.err
    assert _all(connected) == []


@pytest.mark.parametrize("requests", [
    pytest.param([{"id": 1, "repo_type": "model"}], id="missing-repo-id"),
    pytest.param("acme/x", id="requests-not-a-list"),
    pytest.param(["acme/x"], id="entry-not-an-object"),
    pytest.param([{"id": 1, "repo_type": "model", "repo_id": "../../etc"}], id="invalid-repo-id"),
    pytest.param([{"id": 1, "repo_type": "space", "repo_id": "acme/x"}], id="invalid-repo-type"),
])
def test_a_requests_file_with_a_malformed_entry_is_refused_with_exit_2(
    sides: tuple[Instance, Instance], tmp_path: Path, requests: Any
) -> None:
    _, connected = sides
    path = tmp_path / "requests.json"
    path.write_text(json.dumps({"format": "hubgate-requests/1", "instance": "high", "requests": requests}))
    result = connected.cli("requests", "import", str(path))
    assert result.code == 2, result
    assert result.err.startswith("hubgate: "), result
    assert _all(connected) == []


def test_a_requests_file_with_one_malformed_entry_imports_none_of_it(
    sides: tuple[Instance, Instance], fake_hub: Any, tmp_path: Path
) -> None:
    _, connected = sides
    good = unique_repo("good")
    fake_hub.create_repo(good, model_files(43))
    doc = {"format": "hubgate-requests/1", "instance": "high", "requests": [
        {"id": 7, "repo_type": "model", "repo_id": good, "revision": "main", "reason": "ok", "requester": "cli:a"},
        {"id": 8, "repo_type": "model", "repo_id": "../../etc", "revision": "main"},
    ]}
    path = tmp_path / "requests.json"
    path.write_text(json.dumps(doc))
    result = connected.cli("requests", "import", str(path))
    assert result.code == 2, result
    assert _all(connected) == []
