"""Remote code facts: code files, auto_map (local and cross-repo), custom pipelines."""

from __future__ import annotations

import json

import pytest

from mirror.scan import is_code_path


@pytest.mark.parametrize("path,code", [
    ("modeling_x.py", True), ("sub/dir/helper.PY", True), ("lib.so", True), ("x.pyc", True), ("run.sh", True),
    ("nb.ipynb", True), ("win.dll", True), ("mac.dylib", True), ("config.json", False), ("README.md", False),
    ("python", False), ("model.safetensors", False),
])
def test_is_code_path(path: str, code: bool) -> None:
    assert is_code_path(path) is code


def test_code_file_is_a_fact_not_a_finding(scan) -> None:  # type: ignore[no-untyped-def]
    result = scan("sub/modeling_x.py", b"import os\nos.system('x')\n")
    assert result.facts["code"] is True and result.findings == []


def test_auto_map_local_and_cross_repo(scan) -> None:  # type: ignore[no-untyped-def]
    config = {"auto_map": {"AutoConfig": "configuration_x.XConfig", "AutoModel": "org/code-repo--modeling_x.XModel",
                           "AutoTokenizer": ["other/tok--tokenization_t.T", None]}}
    result = scan("config.json", json.dumps(config).encode())
    assert result.verdict == "pass"
    assert result.facts["auto_map"] == ["configuration_x.XConfig", "org/code-repo--modeling_x.XModel",
                                        "other/tok--tokenization_t.T"]
    assert result.facts["auto_map_repos"] == ["org/code-repo", "other/tok"]
    assert result.facts["auto_map_modules"] == ["configuration_x"]


@pytest.mark.parametrize("name", ["tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
                                  "image_processor_config.json", "feature_extractor_config.json"])
def test_auto_map_in_every_transformers_config(scan, name: str) -> None:  # type: ignore[no-untyped-def]
    result = scan(f"sub/{name}", json.dumps({"auto_map": {"AutoProcessor": "a/b--proc.P"}}).encode())
    assert result.facts["auto_map_repos"] == ["a/b"]


def test_auto_map_in_other_json_is_ignored(scan) -> None:  # type: ignore[no-untyped-def]
    result = scan("data.json", json.dumps({"auto_map": {"AutoModel": "a/b--m.M"}}).encode())
    assert "auto_map" not in result.facts


def test_custom_pipelines(scan) -> None:  # type: ignore[no-untyped-def]
    config = {"custom_pipelines": {"pair-classification": {"impl": "custom_pipe.PairPipeline", "pt": ["AutoModel"]}}}
    result = scan("config.json", json.dumps(config).encode())
    assert result.facts["custom_pipelines"] == {"pair-classification": "custom_pipe.PairPipeline"}
    assert result.facts["auto_map_modules"] == ["custom_pipe"]


def test_invalid_json_only_warns(scan) -> None:  # type: ignore[no-untyped-def]
    result = scan("config.json", b"\xef\xbb\xbf{}")  # a BOM: valid UTF-8 text, not valid JSON for json.loads
    assert result.verdict == "warn"
    assert [f.rule for f in result.findings] == ["format.mismatch"]
