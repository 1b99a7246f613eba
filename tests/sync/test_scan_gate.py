"""The content gate on the sync path, against the fake upstream: what a scan blocks is never published
or served, and what people decide (code approval, overrides, a reason for an unclear licence) is
recorded, audited and carried in the snapshot's provenance."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import RepositoryNotFoundError

from fakes.fake_hub import FakeHub
from helpers.scan import evil_pickle

from .conftest import REMOTE_CODE, Hubgate, card, model_files, unique_repo

pytestmark = pytest.mark.integration


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blocking(doc: dict[str, Any]) -> dict[tuple[str | None, str], dict[str, Any]]:
    return {(b["path"], b["rule"]): b for b in (doc["scan"] or {}).get("blocking") or []}


def assert_not_served(hg: Hubgate, repo: str, commit: str, tmp_path: Path) -> None:
    r = hg.client.get(f"/api/models/{repo}")
    assert (r.status_code, r.headers.get("x-error-code")) == (404, "RepoNotFound"), r.text
    assert hg.client.head(f"/{repo}/resolve/{commit}/config.json").status_code == 404
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(repo, "config.json", endpoint=hg.url, cache_dir=tmp_path / "cache")
    assert not hg.manifest_exists(repo, commit)


def test_a_pickle_that_runs_code_is_blocked_never_published_and_never_run(
        fake_hub: FakeHub, hubgate: Hubgate, tiny_files: dict[str, bytes], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    repo = unique_repo("evil-pickle")
    commit = fake_hub.create_repo(repo, model_files(tiny_files, extra={"pytorch_model.bin": evil_pickle(marker)}))
    req = hubgate.request(repo)
    doc = hubgate.approve_and_sync(req["id"])

    assert doc["state"] == "blocked", doc
    reasons = blocking(doc)
    assert [p for p, _ in reasons] == ["pytorch_model.bin"], reasons
    ((_, rule),) = reasons
    assert rule.startswith("pickle."), reasons
    assert "system" in json.dumps(reasons[("pytorch_model.bin", rule)]), "the finding names the forbidden global"
    record = next(f for f in doc["scan"]["files"] if f["path"] == "pytorch_model.bin")
    assert record["format"] == "pickle" and record["verdict"] == "block"
    assert any("system" in g for g in record["globals"]) and record["allowlist_version"]
    assert "Blocked by the content scan" in doc["error"] and "pytorch_model.bin" in doc["error"]
    assert_not_served(hubgate, repo, commit.sha, tmp_path)
    assert not marker.exists(), "the scanner executed the pickle"
    # blocked is a decision, not a failure: nothing is left in the queue to try again by itself
    assert hubgate.sync() == 0 and hubgate.get_request(req["id"])["state"] == "blocked"


@pytest.mark.parametrize("name", ["model.safetensors", "weights", "config.json"])
def test_a_pickle_under_another_name_is_blocked(fake_hub: FakeHub, hubgate: Hubgate, tiny_files: dict[str, bytes],
                                                tmp_path: Path, name: str) -> None:
    marker = tmp_path / "pwned"
    repo = unique_repo("renamed")
    files = model_files(tiny_files)
    files[name] = evil_pickle(marker, protocol=2)
    commit = fake_hub.create_repo(repo, files)
    doc = hubgate.approve_and_sync(hubgate.request(repo)["id"])
    assert doc["state"] == "blocked"
    assert {p for p, _ in blocking(doc)} == {name}, blocking(doc)
    assert_not_served(hubgate, repo, commit.sha, tmp_path)
    assert not marker.exists()


def test_malformed_safetensors_is_blocked(fake_hub: FakeHub, hubgate: Hubgate, tiny_files: dict[str, bytes],
                                         tmp_path: Path) -> None:
    good = tiny_files["model.safetensors"]
    n = int.from_bytes(good[:8], "little")
    header = json.loads(good[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    # the header starts with a space: the safetensors library accepts it, the format forbids it
    spaced = b" " + json.dumps(header).encode()
    bad = len(spaced).to_bytes(8, "little") + spaced + good[8 + n:]
    # a duplicate tensor name, the last one valid: "last one wins" in the library
    dup = good[8:8 + n].rstrip(b" ")[:-1] + b',"' + name.encode() + b'":' + json.dumps(header[name]).encode() + b"}"
    duplicated = len(dup).to_bytes(8, "little") + dup + good[8 + n:]
    for label, data in (("space", bad), ("duplicate", duplicated)):
        repo = unique_repo(f"st-{label}")
        commit = fake_hub.create_repo(repo, model_files(tiny_files, extra={"model.safetensors": data}))
        doc = hubgate.approve_and_sync(hubgate.request(repo)["id"])
        assert doc["state"] == "blocked", label
        assert {p for p, _ in blocking(doc)} == {"model.safetensors"}, (label, blocking(doc))
        assert_not_served(hubgate, repo, commit.sha, tmp_path)


def test_a_plain_torch_state_dict_from_save_pretrained_passes(fake_hub: FakeHub, hubgate: Hubgate,
                                                             tiny_folder: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    # What save_pretrained(safe_serialization=False) wrote before transformers 5 (which writes only
    # safetensors): torch.save of the model's state dict, as pytorch_model.bin.
    out = tmp_path / "bin-model"
    model = AutoModelForCausalLM.from_pretrained(tiny_folder)
    model.save_pretrained(out)
    (out / "model.safetensors").unlink()
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} | {"README.md": card("apache-2.0")}
    repo = unique_repo("torch-bin")
    fake_hub.create_repo(repo, files)
    doc = hubgate.approve_and_sync(hubgate.request(repo)["id"])
    assert doc["state"] == "available", doc["error"]
    record = next(f for f in doc["scan"]["files"] if f["path"] == "pytorch_model.bin")
    assert record["format"] == "torch-zip" and record["verdict"] == "pass"
    assert "torch._utils._rebuild_tensor_v2" in record["globals"]
    local = hf_hub_download(repo, "pytorch_model.bin", endpoint=hubgate.url, cache_dir=tmp_path / "cache")
    assert Path(local).read_bytes() == files["pytorch_model.bin"]
    snaps = hubgate.api("GET", f"/repos/model/{repo}/snapshots").json()
    assert snaps[0]["scan_verdict"] == "pass"
    assert {f["path"] for f in snaps[0]["provenance"]["scan"]["files"]} == set(files)


@pytest.mark.parametrize("bad", [".git/config", "sub/.GIT/hooks/post-checkout", "Model.safetensors", "config.json.",
                                 "config.json "])
def test_a_tree_with_git_metadata_or_twins_is_refused_before_any_download(
        fake_hub: FakeHub, hubgate: Hubgate, tiny_files: dict[str, bytes], bad: str) -> None:
    repo = unique_repo("tree")
    content = b"[core]\n\tfsmonitor = touch /tmp/hubgate-pwned\n" if ".git" in bad.lower() else b"twin\n"
    fake_hub.create_repo(repo, model_files(tiny_files, extra={bad: content}))
    doc = hubgate.request(repo)
    assert doc["verdict"] == "blocked"
    tree = [f for f in doc["findings"] if f["rule"].startswith("path.")]
    assert tree and bad in json.dumps(tree), doc["findings"]
    r = hubgate.api("POST", f"/requests/{doc['id']}/approve")
    assert r.status_code == 422 and bad.strip() in r.text

    # Even a sync of an approved request (the tree changed under the same name: a request made by
    # sha before the rule, or upstream rewrote history) refuses it before fetching a byte.
    from registry.db import session_scope
    from registry.models import MirrorRequest

    with session_scope(hubgate.svc.engine) as session:
        row = session.get(MirrorRequest, doc["id"])
        row.verdict, row.findings = "review", []
        session.add(row)
    mark = fake_hub.log.mark()
    synced = hubgate.approve_and_sync(doc["id"])
    assert synced["state"] == "blocked"
    assert any(b["rule"].startswith("path.") for b in synced["scan"]["blocking"])
    assert not [e for e in fake_hub.log.since(mark) if e.is_content_get], "a refused tree was downloaded"


def test_remote_code_is_published_only_after_its_code_is_approved(fake_hub: FakeHub, hubgate: Hubgate,
                                                                  tiny_files: dict[str, bytes], tmp_path: Path) -> None:
    repo = unique_repo("code")
    commit = fake_hub.create_repo(repo, model_files(tiny_files, remote_code=True))
    req = hubgate.request(repo)
    doc = hubgate.approve_and_sync(req["id"])
    assert doc["state"] == "blocked"
    assert doc["code_files"] == [{"path": "modeling_x.py", "sha256": sha256(REMOTE_CODE), "size": len(REMOTE_CODE),
                                  "approved": False, "actor": None}]
    assert ("modeling_x.py", "code.unapproved") in blocking(doc)
    assert_not_served(hubgate, repo, commit.sha, tmp_path)

    # the admin reads the code through hubgate before approving it
    r = hubgate.api("GET", f"/requests/{req['id']}/files/modeling_x.py")
    assert r.status_code == 200 and r.content == REMOTE_CODE
    assert r.headers["x-content-sha256"] == sha256(REMOTE_CODE)
    reader = hubgate.create_token("reader")
    assert hubgate.api("GET", f"/requests/{req['id']}/files/modeling_x.py", token=reader).status_code == 403

    # an approval names exact bytes: another hash is refused, an override cannot stand in for it
    wrong = hubgate.api("POST", f"/requests/{req['id']}/code-approval", json={"files": {"modeling_x.py": "0" * 64}})
    assert wrong.status_code == 409, wrong.text
    ov = hubgate.api("POST", f"/requests/{req['id']}/overrides",
                     json={"path": "modeling_x.py", "rule": "code.unapproved", "justification": "trust me, it is fine"})
    assert ov.status_code == 400, ov.text
    ok = hubgate.api("POST", f"/requests/{req['id']}/code-approval",
                     json={"files": {"modeling_x.py": sha256(REMOTE_CODE)}, "retry": True})
    assert ok.status_code == 200 and ok.json()["state"] == "approved", ok.text
    hubgate.sync()
    doc = hubgate.get_request(req["id"])
    assert doc["state"] == "available", doc["error"]
    local = hf_hub_download(repo, "modeling_x.py", endpoint=hubgate.url, cache_dir=tmp_path / "c1")
    assert Path(local).read_bytes() == REMOTE_CODE
    prov = hubgate.api("GET", f"/repos/model/{repo}/snapshots").json()[0]["provenance"]
    assert prov["code_approval"]["files"][0]["approved"] is True
    events = hubgate.api("GET", "/audit", params={"action": "code.approve"}).json()
    assert any(repo in e["target"] for e in events)

    # A later revision with the same code needs nothing new; with changed code, a new approval.
    same = fake_hub.commit(repo, {"notes.txt": b"docs only\n"})
    assert hubgate.approve_and_sync(hubgate.request(repo, same.sha)["id"])["state"] == "available"
    changed_code = REMOTE_CODE + b"\nimport os\nos.system('id')\n"
    changed = fake_hub.commit(repo, {"modeling_x.py": changed_code})
    doc = hubgate.approve_and_sync(hubgate.request(repo, changed.sha)["id"])
    assert doc["state"] == "blocked" and doc["code_files"][0]["sha256"] == sha256(changed_code)
    assert hubgate.client.head(f"/{repo}/resolve/{changed.sha}/modeling_x.py").status_code == 404


def test_an_override_needs_a_justification_is_audited_and_travels_with_the_snapshot(
        fake_hub: FakeHub, hubgate: Hubgate, tiny_files: dict[str, bytes], tmp_path: Path) -> None:
    from scan.corpus import training_args_pickle

    # Trainer's training_args.bin: a pickle of a class outside the allowlist that an admin judges harmless
    odd = training_args_pickle()
    repo = unique_repo("override")
    fake_hub.create_repo(repo, model_files(tiny_files, extra={"training_args.bin": odd}))
    req = hubgate.request(repo)
    doc = hubgate.approve_and_sync(req["id"])
    assert doc["state"] == "blocked"
    ((path, rule),) = blocking(doc)
    assert path == "training_args.bin"
    url = f"/requests/{req['id']}/overrides"
    assert hubgate.api("POST", url, json={"path": path, "rule": rule, "justification": "ok"}).status_code == 422
    assert hubgate.api("POST", url, json={"path": path, "rule": "pickle.nope", "justification": "x" * 20}).status_code == 409
    assert hubgate.api("POST", url, json={"path": path, "rule": rule, "justification": "x" * 20, "extra": 1}).status_code == 422
    requester = hubgate.create_token("requester")
    assert hubgate.api("POST", url, token=requester,
                       json={"path": path, "rule": rule, "justification": "Trainer arguments: plain settings, no code"}).status_code == 403
    r = hubgate.api("POST", url, json={"path": path, "rule": rule, "justification": "Trainer arguments: plain settings, no code"})
    assert r.status_code == 201, r.text
    assert hubgate.api("POST", f"/requests/{req['id']}/retry").status_code == 200
    hubgate.sync()
    doc = hubgate.get_request(req["id"])
    assert doc["state"] == "available", doc["error"]
    prov = hubgate.api("GET", f"/repos/model/{repo}/snapshots").json()[0]["provenance"]
    assert prov["overrides"] == [{"path": path, "sha256": sha256(odd), "rule": rule,
                                  "justification": "Trainer arguments: plain settings, no code", "actor": "test-admin"}]
    assert prov["scan"]["overridden"][0]["path"] == path
    events = hubgate.api("GET", "/audit", params={"action": "scan.override"}).json()
    assert events and events[0]["detail"]["justification"] == "Trainer arguments: plain settings, no code"
    assert Path(hf_hub_download(repo, path, endpoint=hubgate.url, cache_dir=tmp_path / "c")).read_bytes() == odd


@pytest.mark.parametrize("license_", ["other", None])
def test_approving_a_repo_whose_licence_is_other_or_missing_needs_a_reason(
        fake_hub: FakeHub, hubgate: Hubgate, tiny_files: dict[str, bytes], license_: str | None) -> None:
    repo = unique_repo("lic")
    fake_hub.create_repo(repo, model_files(tiny_files, license=license_))
    req = hubgate.request(repo)
    r = hubgate.api("POST", f"/requests/{req['id']}/approve")
    assert r.status_code == 422 and "reason" in r.json()["message"], r.text
    assert hubgate.get_request(req["id"])["state"] == "pending"
    r = hubgate.api("POST", f"/requests/{req['id']}/approve", json={"reason": "  "})
    assert r.status_code == 422
    r = hubgate.api("POST", f"/requests/{req['id']}/approve", json={"reason": "legal reviewed the licence: LEGAL-42"})
    assert r.status_code == 200 and r.json()["decision_reason"] == "legal reviewed the licence: LEGAL-42"
    events = hubgate.api("GET", "/audit", params={"target": f"request:{req['id']}", "action": "request.approve"}).json()
    assert events[0]["detail"]["reason"] == "legal reviewed the licence: LEGAL-42"


def test_cross_repo_auto_map_is_blocked_until_that_repo_is_mirrored(
        fake_hub: FakeHub, hubgate: Hubgate, tiny_files: dict[str, bytes]) -> None:
    code_repo = unique_repo("code-home")
    fake_hub.create_repo(code_repo, model_files(tiny_files, remote_code=True))
    repo = unique_repo("borrower")
    files = model_files(tiny_files)
    config = json.loads(files["config.json"])
    config["auto_map"] = {"AutoModelForCausalLM": f"{code_repo}--modeling_x.XForCausalLM"}
    files["config.json"] = json.dumps(config).encode()
    fake_hub.create_repo(repo, files)
    req = hubgate.request(repo)
    doc = hubgate.approve_and_sync(req["id"])
    assert doc["state"] == "blocked"
    b = blocking(doc)[("config.json", "config.auto-map-cross-repo")]
    assert code_repo in b["message"]

    # mirror the code's home (its code approved), then the borrower passes
    home = hubgate.request(code_repo)
    hubgate.approve_and_sync(home["id"])
    r = hubgate.api("POST", f"/requests/{home['id']}/code-approval", json={"retry": True})
    assert r.status_code == 200, r.text
    hubgate.sync()
    assert hubgate.get_request(home["id"])["state"] == "available"
    assert hubgate.api("POST", f"/requests/{req['id']}/retry").status_code == 200
    hubgate.sync()
    assert hubgate.get_request(req["id"])["state"] == "available"


def test_a_hostile_chat_template_is_blocked(fake_hub: FakeHub, hubgate: Hubgate, tiny_files: dict[str, bytes]) -> None:
    repo = unique_repo("ssti")
    tok = json.loads(tiny_files["tokenizer_config.json"])
    tok["chat_template"] = "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{{ m.content }}{% endfor %}"
    fake_hub.create_repo(repo, model_files(tiny_files, extra={"tokenizer_config.json": json.dumps(tok).encode()}))
    doc = hubgate.approve_and_sync(hubgate.request(repo)["id"])
    assert doc["state"] == "blocked"
    assert {p for p, _ in blocking(doc)} == {"tokenizer_config.json"}


def test_a_scan_over_its_limits_blocks_the_file_and_the_next_job_runs(
        fake_hub: FakeHub, make_hubgate, tiny_files: dict[str, bytes]) -> None:  # type: ignore[no-untyped-def]
    hg = make_hubgate(scan_wall_seconds=1, scan_cpu_seconds=1)
    from scan.corpus import memo_heavy_pickle

    heavy = memo_heavy_pickle(40_000_000)  # 40 MB of memo opcodes (~4 s to walk): its author chooses the scan's time
    slow, fine = unique_repo("heavy"), unique_repo("fine")
    fake_hub.create_repo(slow, model_files(tiny_files, extra={"state.pkl": heavy}))
    fake_hub.create_repo(fine, model_files(tiny_files))
    a, b = hg.request(slow), hg.request(fine)
    hg.approve(a["id"])
    hg.approve(b["id"])
    assert hg.sync() == 2
    doc = hg.get_request(a["id"])
    assert doc["state"] == "blocked"
    ((path, rule),) = blocking(doc)
    assert path == "state.pkl" and rule.startswith("scan."), rule
    assert hg.get_request(b["id"])["state"] == "available"
