"""Every corpus case reaches its verdict, with the rules and pickle globals it must name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mirror.scan import ScanContext, ScanItem, ScanLimits, scan_items

from .conftest import rules, scan_bytes
from .corpus import CASES, MARKER, PAYLOAD_COMMAND, Case, write_case


def _check(case: Case, result) -> None:  # type: ignore[no-untyped-def]
    assert result.verdict == case.verdict, [f.to_dict() for f in result.findings]
    assert set(case.rules) <= rules(result), [f.to_dict() for f in result.findings]
    named = {f.data.get("global") for f in result.findings if f.rule == "pickle.global"}
    for name in case.names:
        assert name in result.globals
        assert name in named


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_verdict(case: Case, tmp_path: Path) -> None:
    data = case.build()
    tree = {case.filename: len(data), **{p: len(b) for p, b in case.extra.items()}}
    _check(case, scan_bytes(tmp_path, case.filename, data, tree))


def test_pickle_verdicts_record_the_allowlist_version(tmp_path: Path) -> None:
    from mirror.scan import ALLOWLIST_VERSION

    for case in CASES:
        if case.names:
            data = case.build()
            result = scan_bytes(tmp_path, case.filename, data, {case.filename: len(data)})
            assert result.allowlist_version == ALLOWLIST_VERSION, case.name


def test_whole_corpus_in_the_sandbox_blocks_everything_and_runs_nothing(tmp_path: Path) -> None:
    """One child scans the whole corpus as one snapshot; no payload ever runs (the marker never appears)."""
    if os.path.exists(MARKER):
        os.remove(MARKER)
    tree: dict[str, int] = {}
    items = []
    for case in CASES:
        folder_tree = write_case(case, tmp_path / case.name)
        tree.update({f"{case.name}/{p}": size for p, size in folder_tree.items()})
        items.append(ScanItem(f"{case.name}/{case.filename}", "0" * 64, folder_tree[case.filename],
                              str(tmp_path / case.name / case.filename)))
    results = scan_items(items, ScanContext(tree), ScanLimits(cpu_seconds=20, wall_seconds=60))
    assert [r.path for r in results] == [i.path for i in items]
    for case, result in zip(CASES, results, strict=True):
        _check(case, result)
    assert not os.path.exists(MARKER)


def test_payloads_really_carry_the_marker_command() -> None:
    """The no-execution test means something only if the payloads would have touched the marker."""
    carrying = [c for c in CASES if c.names and any(n.endswith(("system", "Popen", "exec", "eval")) for n in c.names)]
    assert len(carrying) >= 20
    for case in carrying:
        data = case.build()
        assert MARKER.encode() in data or PAYLOAD_COMMAND.encode() in data, case.name
