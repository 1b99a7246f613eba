"""Every case of the scan corpus (tests/scan/corpus.py) through a real ``import`` and a real
``import-bundle``: what the scan blocks is never published nor served; what passes is served byte
for byte. The bundle comes from a low side whose (old, lenient) scanner let everything through:
the sealed side's own scan decides."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.content import write_tree
from helpers.scan import lenient_gate
from scan.corpus import CASES, MARKER, Case

from .conftest import Instance, card

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GATE_BLOCKED = {"benign-remote-code-file": "code.unapproved", "config-cross-repo-auto-map": "config.auto-map-cross-repo"}


def is_blocked(case: Case) -> bool:
    return case.verdict == "block" or case.name in GATE_BLOCKED


def expected_rules(case: Case) -> set[str]:
    return {GATE_BLOCKED[case.name]} if case.name in GATE_BLOCKED else set(case.rules)


def case_folder(case: Case, root: Path) -> tuple[Path, dict[str, bytes]]:
    files = {case.filename: case.build(), **case.extra, "README.md": card(case.name)}
    return write_tree(root / case.name, files), files


def check_served(inst: Instance, outcomes: dict[str, tuple[Case, dict[str, bytes], set[str] | None]]) -> list[tuple]:  # type: ignore[type-arg]
    """Each case's repo as a client sees it: (case, what is wrong) for every case that is not as expected."""
    wrong = []
    for name, (case, files, blocked_rules) in outcomes.items():
        got = inst.http.get(f"/corpus/{name}/resolve/main/{case.filename}")
        if is_blocked(case):
            if blocked_rules is None or not expected_rules(case) <= blocked_rules or got.status_code != 404:
                wrong.append((name, "should be blocked", sorted(blocked_rules or []), got.status_code))
        elif blocked_rules is not None or got.status_code != 200 or got.content != files[case.filename]:
            wrong.append((name, "should be served", sorted(blocked_rules or []), got.status_code))
    return wrong


def test_every_corpus_case_through_a_real_import(make_instance, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mirror.importer import import_folder
    from mirror.scan.gate import Gate
    from registry.errors import ContentBlockedError
    from registry.types import RepoRef

    Path(MARKER).unlink(missing_ok=True)
    inst: Instance = make_instance()
    svc = inst.svc
    gate = Gate(svc.store, svc.settings.scan_limits, signer=svc.signer)
    outcomes = {}
    for case in CASES:
        folder, files = case_folder(case, tmp_path / "cases")
        try:
            import_folder(svc.engine, svc.store, folder, RepoRef.parse("model", f"corpus/{case.name}"), gate=gate,
                          signer=svc.signer)
            outcomes[case.name] = (case, files, None)
        except ContentBlockedError as exc:
            outcomes[case.name] = (case, files, {b["rule"] for b in exc.scan["blocking"]})
    inst.serve()
    assert not check_served(inst, outcomes)
    stored = {k.split("/")[1].removeprefix("models--corpus--") for k in svc.store.driver.iter_keys("manifests/")}
    assert stored == {c.name for c in CASES if not is_blocked(c)}, "a blocked snapshot left a manifest behind"
    assert not Path(MARKER).exists(), "a scanned file was executed"


def test_every_corpus_case_through_a_real_import_bundle(make_instance, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mirror import signing
    from mirror.bundles import export_bundle
    from mirror.importer import import_folder
    from registry.types import RepoRef

    Path(MARKER).unlink(missing_ok=True)
    low: Instance = make_instance(name="low", instance_name="low-side")
    lenient = lenient_gate(low.svc.store, low.svc.signer)
    files_of = {}
    for case in CASES:
        folder, files = case_folder(case, tmp_path / "cases")
        import_folder(low.svc.engine, low.svc.store, folder, RepoRef.parse("model", f"corpus/{case.name}"),
                      gate=lenient, signer=low.svc.signer)
        files_of[case.name] = files
    bundle = tmp_path / "bundle.tar"
    export_bundle(low.svc.engine, low.svc.store, low.svc.signer, bundle, form="tar", instance="low-side")
    pub = tmp_path / "low.pub"
    pub.write_bytes(signing.public_pem(low.svc.signer.private_key.public_key()))

    high: Instance = make_instance(name="high", trusted_keys=str(pub), upstream_url="")
    r = high.cli("import-bundle", str(bundle))
    assert r.code == 4, r  # something was blocked
    blocked_names = {line.split()[1].split("@")[0].removeprefix("model:corpus/")
                     for line in r.err.splitlines() if line.startswith("blocked ")}
    from sqlmodel import Session

    from registry import audit

    with Session(high.svc.engine) as session:
        events = {e.target.split("@")[0].removeprefix("model:corpus/"): {b["rule"] for b in e.detail["reasons"]}
                  for e in audit.query(session, action="bundle.blocked", limit=1000)}
    assert set(events) == blocked_names
    outcomes = {c.name: (c, files_of[c.name], events.get(c.name)) for c in CASES}
    high.serve()
    assert not check_served(high, outcomes)
    assert not Path(MARKER).exists(), "a scanned file was executed"
