"""The gate's decision, a pure function: every blocking finding left after people's decisions."""

from __future__ import annotations

from mirror.scan.base import FileScan, ScanFinding
from mirror.scan.gate import CODE_RULE, CROSS_REPO_RULE, Decisions, decide
from registry.scanning import ApprovedCode, Override

A, B, C = "a" * 64, "b" * 64, "c" * 64


def _file(path: str, sha: str, *findings: ScanFinding, **facts: object) -> FileScan:
    return FileScan(path, sha, 10, "pickle", findings=list(findings), facts=dict(facts))


def test_a_blocking_finding_blocks_and_a_matching_override_lets_it_through_named() -> None:
    bad = ScanFinding("pickle.global", "builtins.exec is not on the allowlist", "block", {"global": "builtins.exec"})
    files = [_file("w.pkl", A, bad), _file("ok.json", B)]
    result = decide(files, [], Decisions(), set())
    assert result.blocked and [(b["path"], b["rule"]) for b in result.blocking] == [("w.pkl", "pickle.global")]
    assert result.blocking[0]["data"] == {"global": "builtins.exec"}

    other_content = Override("w.pkl", C, "pickle.global", "reviewed it twice", "alice")
    other_rule = Override("w.pkl", A, "pickle.parse", "reviewed it twice", "alice")
    assert decide(files, [], Decisions((other_content, other_rule)), set()).blocked

    ok = Override("w.pkl", A, "pickle.global", "reviewed it twice", "alice")
    result = decide(files, [], Decisions((ok,)), set())
    assert not result.blocked
    assert result.overridden == [{"path": "w.pkl", "sha256": A, "rule": "pickle.global", "message": bad.message,
                                  "data": bad.data, "justification": "reviewed it twice", "actor": "alice"}]


def test_warnings_never_block() -> None:
    files = [_file("x.json", A, ScanFinding("json.invalid", "not JSON", "warn"))]
    assert not decide(files, [], Decisions(), set()).blocked


def test_code_needs_an_approval_of_exactly_its_bytes_and_no_override_replaces_it() -> None:
    files = [_file("modeling.py", A), _file("helper.py", B, code=True)]
    result = decide(files, [], Decisions(), set())
    assert {(b["path"], b["rule"]) for b in result.blocking} == {("modeling.py", CODE_RULE), ("helper.py", CODE_RULE)}
    assert [c["approved"] for c in result.code_files] == [False, False]

    stale = ApprovedCode("modeling.py", C, "alice")  # an approval of older code
    override = Override("modeling.py", A, CODE_RULE, "trust me on this one", "mallory")
    partial = decide(files, [], Decisions((override,), (stale, ApprovedCode("helper.py", B, "alice"))), set())
    assert [(b["path"], b["rule"]) for b in partial.blocking] == [("modeling.py", CODE_RULE)]

    full = decide(files, [], Decisions((), (ApprovedCode("modeling.py", A, "alice"), ApprovedCode("helper.py", B, "bob"))), set())
    assert not full.blocked
    assert {(c["path"], c["approved"], c["actor"]) for c in full.code_files} == {("modeling.py", True, "alice"),
                                                                                ("helper.py", True, "bob")}


def test_cross_repo_auto_map_blocks_unless_the_target_is_mirrored() -> None:
    files = [_file("config.json", A, auto_map_repos=["other/code"])]
    result = decide(files, [], Decisions(), set())
    assert [(b["path"], b["rule"]) for b in result.blocking] == [("config.json", CROSS_REPO_RULE)]
    assert "other/code" in result.blocking[0]["message"]
    assert not decide(files, [], Decisions(), {"other/code"}).blocked


def test_tree_findings_block_the_whole_revision() -> None:
    tree = [ScanFinding("path.git", "a .git segment", "block", {"paths": [".git/config"]})]
    result = decide([], tree, Decisions(), set())
    assert result.blocking == [{"path": None, "sha256": None, "rule": "path.git", "message": "a .git segment",
                                "data": {"paths": [".git/config"]}}]
    assert "(tree)" in result.message("acme/x@" + "0" * 40)


def test_decisions_carried_by_a_bundle_are_read_from_the_origin_provenance() -> None:
    prov = {"overrides": [{"path": "w.pkl", "sha256": A, "rule": "pickle.global", "justification": "ok, reviewed",
                           "actor": "alice"}],
            "code_approval": {"files": [{"path": "m.py", "sha256": B, "approved": True, "actor": "bob"},
                                        {"path": "n.py", "sha256": C, "approved": False, "actor": None}]}}
    d = Decisions.from_provenance(prov)
    assert d.overrides == (Override("w.pkl", A, "pickle.global", "ok, reviewed", "alice"),)
    assert d.code == (ApprovedCode("m.py", B, "bob"),)
    assert Decisions.from_provenance({}) == Decisions()
