"""The content gate on the operator's paths: ``hubgate import``, ``hubgate rescan``, ``verify --repair``,
and the signed provenance that carries every scan record."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from helpers.content import write_tree
from helpers.scan import OLD_SCANNER_VERSION, evil_pickle, lenient_gate
from mirror.storage import layout

from .conftest import Instance, model_files, unique_repo

CODE = b"from transformers import GPT2LMHeadModel\n\n\nclass X(GPT2LMHeadModel):\n    pass\n"


def _published(inst: Instance, repo: str) -> bool:
    from sqlmodel import Session

    from registry import catalog
    from registry.errors import RepoNotFoundError
    from registry.types import RepoRef

    with Session(inst.svc.engine) as session:
        try:
            catalog.list_snapshots(session, RepoRef.parse("model", repo))
        except RepoNotFoundError:
            return False
    return True


def test_import_refuses_a_blocked_folder_with_exit_4_and_publishes_nothing(make_instance, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst: Instance = make_instance()
    marker = tmp_path / "pwned"
    folder = write_tree(tmp_path / "evil", {**model_files(1), "pytorch_model.bin": evil_pickle(marker)})
    r = inst.cli("import", str(folder), "--repo", "acme/evil")
    assert r.code == 4, r
    assert "pytorch_model.bin" in r.err and "blocked by the content scan" in r.err
    assert not _published(inst, "acme/evil")
    assert not list(inst.svc.store.driver.iter_keys("manifests/"))
    assert not marker.exists()


def test_import_of_code_needs_the_operator_to_approve_it(make_instance, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inst: Instance = make_instance()
    folder = write_tree(tmp_path / "code", {**model_files(2), "modeling_x.py": CODE})
    refused = inst.cli("import", str(folder), "--repo", "acme/code")
    assert refused.code == 4 and "modeling_x.py" in refused.err and "code.unapproved" in refused.err, refused
    assert not _published(inst, "acme/code")
    ok = inst.cli("import", str(folder), "--repo", "acme/code", "--approve-code")
    assert ok.code == 0, ok
    from sqlmodel import Session

    from registry import audit

    with Session(inst.svc.engine) as session:
        approvals = audit.query(session, action="code.approve")
        imports = audit.query(session, action="import")
    assert approvals and approvals[0].detail["files"][0]["sha256"] == hashlib.sha256(CODE).hexdigest()
    assert approvals[0].actor.startswith("cli:")
    assert imports and imports[0].target.startswith("model:acme/code@")


def test_rescan_blocks_what_an_older_scanner_let_through_and_clients_get_503(make_instance, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mirror.importer import import_folder
    from registry.types import RepoRef

    inst: Instance = make_instance()
    marker = tmp_path / "pwned"
    clean = inst.import_folder(write_tree(tmp_path / "clean", model_files(3)), "acme/clean")
    svc = inst.svc
    evil = import_folder(svc.engine, svc.store, write_tree(tmp_path / "e", {**model_files(4), "weights": evil_pickle(marker)}),
                         RepoRef.parse("model", "acme/old-scan"), signer=svc.signer,
                         gate=lenient_gate(svc.store, svc.signer)).manifest.commit
    inst.serve()
    assert inst.http.get("/acme/old-scan/resolve/main/weights").status_code == 200  # what the old scanner allowed

    r = inst.cli("rescan", "--json")
    assert r.code == 4, r
    report = json.loads(r.out)
    assert report["checked"] == [f"model:acme/old-scan@{evil}"]
    assert report["skipped"] == [f"model:acme/clean@{clean}"]
    assert [b["path"] for b in report["blocked"][f"model:acme/old-scan@{evil}"]] == ["weights"]
    assert inst.snapshot_state("acme/old-scan", evil) == "blocked"
    for url in ("/acme/old-scan/resolve/main/weights", f"/acme/old-scan/resolve/{evil}/config.json"):
        got = inst.http.get(url)
        assert got.status_code == 503, (url, got.status_code)
        assert "blocked by the content scan" in got.text and "weights" in got.text
    assert not marker.exists()
    # the new scan is recorded and signed; a second rescan has nothing to do; --force re-checks all
    again = inst.cli("rescan", "--json")
    assert again.code == 0 and json.loads(again.out)["checked"] == [], again
    assert inst.snapshot_state("acme/old-scan", evil) == "blocked"  # stays blocked: only a new scanner could free it
    forced = inst.cli("rescan", "--force", "--repo", "acme/clean")
    assert forced.code == 0 and "passed" in forced.out, forced
    assert inst.snapshot_state("acme/clean", clean) == "available"


def test_provenance_carries_every_scan_record_and_is_signed(make_instance, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mirror import signing
    from registry.types import RepoRef

    inst: Instance = make_instance()
    files = model_files(5)
    commit = inst.import_folder(write_tree(tmp_path / "m", files), "acme/signed")
    repo = RepoRef.parse("model", "acme/signed")
    manifest = inst.manifest("acme/signed", commit)
    trusted = {inst.svc.signer.key_id: inst.svc.signer.private_key.public_key()}
    envelope = inst.svc.store.get_provenance_signature(repo, commit)
    prov = signing.verify_provenance(envelope, manifest, trusted)
    assert {f["path"] for f in prov["scan"]["files"]} == set(files)
    st = next(f for f in prov["scan"]["files"] if f["path"] == "model.safetensors")
    assert (st["format"], st["verdict"], st["scanner"]) == ("safetensors", "pass", "hubgate-scan")
    assert prov["scan"]["scanner_version"] and prov["scan"]["allowlist_version"]
    # over REST too, and a tampered record does not verify
    inst.serve()
    r = inst.admin("GET", f"/repos/model/acme/signed/snapshots/{commit}/provenance")
    assert r.status_code == 200 and signing.verify_provenance(r.content, manifest, trusted) == prov
    doc = json.loads(envelope)
    import base64

    payload = json.loads(base64.b64decode(doc["payload"]))
    payload["provenance"]["scan"]["verdict"] = "pass-forged"
    doc["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    with pytest.raises(signing.SignatureError):
        signing.verify_provenance(json.dumps(doc).encode(), manifest, trusted)
    other = inst.manifest("acme/signed", commit)
    with pytest.raises(signing.SignatureError):  # replayed for another snapshot
        signing.verify_provenance(envelope, other.model_copy(update={"commit": "0" * 40}), trusted)


@pytest.mark.integration
def test_verify_repair_scans_the_refetched_snapshot_before_serving_it(make_instance, fake_hub, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A snapshot an older scanner passed loses a blob; the repair re-fetches it, and the current scan
    blocks the snapshot instead of making it available again."""
    from mirror.sync import Syncer
    from mirror.worker import Worker

    inst: Instance = make_instance(upstream_url=fake_hub.url)
    marker = tmp_path / "pwned"
    repo = unique_repo("repair-scan")
    files = {**model_files(6), "extra.pkl": evil_pickle(marker)}
    commit = fake_hub.create_repo(repo, files).sha
    made = inst.cli("request", repo)
    request_id = json.loads(made.out)["id"]
    assert inst.cli("approve", str(request_id)).code == 0
    svc = inst.svc
    syncer = Syncer(svc.engine, svc.store, svc.upstream, signer=svc.signer, gate=lenient_gate(svc.store, svc.signer))
    worker = Worker(svc.engine, syncer)
    while worker.run_once():
        pass
    assert inst.snapshot_state(repo, commit) == "available"
    sha = inst.sha_of(repo, commit, "extra.pkl")
    inst.remove(layout.blob_key(sha))
    assert inst.cli("verify").code == 3
    assert inst.snapshot_state(repo, commit) == "unavailable"
    repaired = inst.cli("verify", "--repair")
    assert repaired.code == 0, repaired
    assert inst.svc.store.has(sha), "the blob was re-fetched"
    assert inst.snapshot_state(repo, commit) == "blocked"
    assert "repaired" not in repaired.out
    assert not marker.exists()
