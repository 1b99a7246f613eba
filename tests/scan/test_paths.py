"""Path grammar over whole trees."""

from __future__ import annotations

import unicodedata

import pytest

from mirror.scan import check_tree


def _by_rule(paths: list[str]) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    for f in check_tree(paths):
        assert f.severity == "block"
        out.setdefault(f.rule, []).append(f.data["paths"])
    return out


def test_clean_tree_passes() -> None:
    assert check_tree(["config.json", ".gitattributes", ".gitignore", "sub/model-00001.safetensors", "a.b/c",
                       "données/é.txt", "x/.github/workflow.yml", ".git-blame-ignore-revs"]) == []


@pytest.mark.parametrize("path,rule", [
    (".git/config", "path.git"), ("sub/.GIT/hooks/x", "path.git"), (".git", "path.git"), ("a/.Git", "path.git"),
    ("config.json.", "path.trailing-dot-space"), ("config.json ", "path.trailing-dot-space"),
    ("dir./x", "path.trailing-dot-space"), ("a\x00b", "path.control"), ("a\nb", "path.control"),
    ("a\x7fb", "path.control"), ("a/./b", "path.dot-segment"), ("../x", "path.dot-segment"),
    ("a//b", "path.dot-segment"), ("a/", "path.dot-segment"), ("a\\b", "path.backslash"),
    ("/etc/passwd", "path.absolute"), ("C:/x", "path.absolute"),
])
def test_single_path_rules_name_the_path(path: str, rule: str) -> None:
    found = _by_rule(["ok.txt", path])
    assert [path] in found[rule]
    assert all("ok.txt" not in listed for lists in found.values() for listed in lists)


def test_case_twins_including_through_folders() -> None:
    found = _by_rule(["model.safetensors", "Model.safetensors", "Sub/a.txt", "sub/b.txt", "other.txt"])
    assert sorted(found["path.case-twin"]) == [["Model.safetensors", "model.safetensors"], ["Sub/a.txt", "sub/b.txt"]]


def test_nfc_twins() -> None:
    nfc, nfd = unicodedata.normalize("NFC", "café.txt"), unicodedata.normalize("NFD", "café.txt")
    assert nfc != nfd
    found = _by_rule([nfc, nfd])
    assert found["path.nfc-twin"] == [sorted([nfc, nfd])]
    assert "path.case-twin" not in found


def test_every_offending_path_is_listed() -> None:
    paths = [f"d{i}/.git/x" for i in range(7)]
    (finding,) = check_tree(paths)
    assert finding.data["paths"] == sorted(paths) and finding.data["count"] == 7
