"""The sealed side scans every bundled snapshot again with its own scanner: it never takes the exporting
side's verdict, but it does honour the people's decisions (overrides, code approvals) the signed
bundle carries with a snapshot."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlmodel import Session

from helpers.content import write_tree
from helpers.scan import evil_pickle, lenient_gate
from mirror import signing
from mirror.bundles import export_bundle, import_bundle
from registry import audit, catalog, scanning
from registry.db import session_scope
from registry.types import RepoRef

from .conftest import build_instance, import_repo

CODE = b"class Custom:\n    pass\n"


def _low(tmp_path: Path):  # type: ignore[no-untyped-def]
    return build_instance(tmp_path / "low", HUBGATE_INSTANCE_NAME="low-side")


def _high(tmp_path: Path, low):  # type: ignore[no-untyped-def]
    pub = low.write_public_key(tmp_path / "low.pub")
    return build_instance(tmp_path / "high", HUBGATE_TRUSTED_KEYS=str(pub), HUBGATE_INSTANCE_NAME="high-side")


def test_a_snapshot_the_low_side_let_through_is_blocked_on_the_sealed_side(tiny_model: Path, tmp_path: Path) -> None:
    low = _low(tmp_path)
    marker = tmp_path / "pwned"
    folder = write_tree(tmp_path / "m", {"README.md": b"# m\n", "pytorch_model.bin": evil_pickle(marker)})
    import_repo(low, folder, "acme/evil", gate=lenient_gate(low.store, low.signer))
    clean = import_repo(low, tiny_model, "acme/tiny")
    export_bundle(low.engine, low.store, low.signer, tmp_path / "b", form="dir", instance="low-side")

    high = _high(tmp_path, low)
    result = import_bundle(high.engine, high.store, tmp_path / "b", trusted=high.trusted())
    assert list(result.blocked) and next(iter(result.blocked)).startswith("model:acme/evil@")
    assert "pytorch_model.bin" in next(iter(result.blocked.values()))
    with Session(high.engine) as session:
        assert [s.commit for s in catalog.list_snapshots(session, RepoRef.parse("model", "acme/tiny"))] == [clean]
        assert not [r for r in catalog.list_repos(session, RepoRef.parse("model", "acme/tiny").type)
                    if r.repo.id == "acme/evil"]
        blocked = audit.query(session, action="bundle.blocked")
    assert blocked and blocked[0].target.startswith("model:acme/evil@")
    assert not list(high.store.driver.iter_keys("manifests/models--acme--evil"))
    assert not marker.exists()


def test_overrides_and_code_approvals_travel_with_the_snapshot(tmp_path: Path) -> None:
    low = _low(tmp_path)
    from scan.corpus import training_args_pickle

    counts = training_args_pickle()  # Trainer's training_args.bin: outside the allowlist, harmless
    folder = write_tree(tmp_path / "m", {"README.md": b"# m\n", "training_args.bin": counts, "modeling_c.py": CODE})
    repo = RepoRef.parse("model", "acme/decided")
    admin = audit.Actor("alice", "admin")
    # the low side's scan blocks the pickle's global; alice overrides it and approves the code
    from mirror.scan.gate import Gate

    rule = _blocking_rule(low, folder, repo)
    with session_scope(low.engine) as session:
        scanning.add_override(session, repo, path="training_args.bin", sha256=hashlib.sha256(counts).hexdigest(), rule=rule,
                              justification="Trainer settings only, reviewed", actor=admin)
        scanning.approve_code(session, repo, {"modeling_c.py": hashlib.sha256(CODE).hexdigest()}, actor=admin)
    commit = import_repo(low, folder, "acme/decided", gate=Gate(low.store, signer=low.signer))
    export_bundle(low.engine, low.store, low.signer, tmp_path / "b", form="tar", instance="low-side")

    high = _high(tmp_path, low)
    result = import_bundle(high.engine, high.store, tmp_path / "b", trusted=high.trusted(),
                           gate=Gate(high.store, signer=high.signer))  # as `hubgate import-bundle` does
    assert not result.blocked and [k.commit for k in result.published] == [commit]
    prov = high.store.get_provenance(repo, commit)
    # the high side's own scan, with the low side's decisions applied and named
    assert prov["scan"]["overridden"][0]["path"] == "training_args.bin"
    assert prov["scan"]["overridden"][0]["actor"] == "alice"
    assert prov["code_approval"]["files"][0]["approved"] is True
    assert prov["origin"]["overrides"][0]["justification"] == "Trainer settings only, reviewed"
    # signed by the high side's key
    manifest = high.store.get_manifest(repo, commit)
    key = {high.signer.key_id: high.signer.private_key.public_key()}
    assert signing.verify_provenance(high.store.get_provenance_signature(repo, commit), manifest, key)["scan"]


def _blocking_rule(inst, folder: Path, repo: RepoRef) -> str:  # type: ignore[no-untyped-def]
    """The rule the current scanner blocks training_args.bin with (read from a refused import)."""
    import pytest

    from mirror.importer import import_folder
    from registry.errors import ContentBlockedError

    with pytest.raises(ContentBlockedError) as refused:
        import_folder(inst.engine, inst.store, folder, repo, signer=inst.signer)
    found = {(b["path"], b["rule"]) for b in refused.value.scan["blocking"]}
    assert ("modeling_c.py", "code.unapproved") in found
    (rule,) = [r for p, r in found if p == "training_args.bin"]
    return rule


def test_a_repo_gated_upstream_stays_gated_across_the_air_gap(tiny_model: Path, tmp_path: Path) -> None:
    from registry import access, workflow

    low = _low(tmp_path)
    commit = import_repo(low, tiny_model, "acme/gated")
    with session_scope(low.engine) as session:
        req = workflow.submit(session, repo=RepoRef.parse("model", "acme/gated"), revision="main", commit=commit,
                              allow_patterns=None, ignore_patterns=None, reason="eval",
                              actor=audit.Actor("bob", "requester"), verdict="review", changes=None,
                              findings=[{"rule": "gated", "severity": "warn", "message": "gated upstream", "data": {}}])
        workflow.approve(session, req.pk or 0, audit.Actor("alice", "admin"))
        workflow.start(session, req.pk or 0)
        workflow.finish(session, req.pk or 0)
    import_repo(low, tiny_model, "acme/open", revision="1" * 40)
    export_bundle(low.engine, low.store, low.signer, tmp_path / "b", form="dir", instance="low-side")

    high = _high(tmp_path, low)
    result = import_bundle(high.engine, high.store, tmp_path / "b", trusted=high.trusted())
    assert len(result.published) == 2 and not result.blocked
    with Session(high.engine) as session:
        assert access.get_visibility(session, RepoRef.parse("model", "acme/gated")) == "gated"
        assert access.get_visibility(session, RepoRef.parse("model", "acme/open")) == "public"
