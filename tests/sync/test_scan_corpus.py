"""Every case of the scan corpus (tests/scan/corpus.py) through a real sync from the fake upstream:
what the scan blocks ends ``blocked`` and is never served; what passes is served byte for byte.
Nothing the corpus holds is ever executed."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from fakes.fake_hub import FakeHub
from scan.corpus import CASES, MARKER, Case

from .conftest import Hubgate, card

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Cases the scanner passes but the gate holds back: code nobody approved, auto_map into a repo not mirrored.
GATE_BLOCKED = {"benign-remote-code-file": "code.unapproved", "config-cross-repo-auto-map": "config.auto-map-cross-repo"}


def expected_rules(case: Case) -> set[str]:
    return {GATE_BLOCKED[case.name]} if case.name in GATE_BLOCKED else set(case.rules)


def is_blocked(case: Case) -> bool:
    return case.verdict == "block" or case.name in GATE_BLOCKED


def case_files(case: Case) -> dict[str, bytes]:
    files = {case.filename: case.build(), **case.extra}
    files.setdefault("README.md", card("mit", title=case.name))
    return files


def test_every_corpus_case_through_a_real_sync(fake_hub: FakeHub, make_hubgate) -> None:  # type: ignore[no-untyped-def]
    hubgate: Hubgate = make_hubgate(rate_limit_requests_per_hour=0)  # one token files every case
    marker = Path(MARKER)
    marker.unlink(missing_ok=True)
    assert {c.name for c in CASES} >= set(GATE_BLOCKED), "the corpus changed: update GATE_BLOCKED"
    repos: dict[str, tuple[Case, str, dict[str, bytes], int]] = {}
    for case in CASES:
        repo = f"corpus/{case.name}-{uuid.uuid4().hex[:6]}"
        files = case_files(case)
        fake_hub.create_repo(repo, files)
        req = hubgate.request(repo)
        hubgate.approve(req["id"])
        repos[case.name] = (case, repo, files, req["id"])
    assert hubgate.sync(max_jobs=len(CASES) + 5) == len(CASES)

    wrong = []
    for case, repo, files, pk in repos.values():
        doc = hubgate.get_request(pk)
        head = hubgate.client.head(f"/{repo}/resolve/main/{case.filename}")
        if is_blocked(case):
            found = {b["rule"] for b in (doc["scan"] or {}).get("blocking") or []}
            if doc["state"] != "blocked" or head.status_code != 404 or not expected_rules(case) <= found:
                wrong.append((case.name, doc["state"], head.status_code, sorted(found)))
        else:
            got = hubgate.client.get(f"/{repo}/resolve/main/{case.filename}")
            if doc["state"] != "available" or got.status_code != 200 or got.content != files[case.filename]:
                wrong.append((case.name, doc["state"], got.status_code, doc["error"]))
    assert not wrong, wrong
    assert not marker.exists(), "a scanned file was executed"
