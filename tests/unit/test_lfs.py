from __future__ import annotations

import pytest

from mirror.lfs import LfsRules

HUB = LfsRules.hub_default()


@pytest.mark.parametrize(
    "path",
    [
        "model.safetensors",
        "pytorch_model.bin",
        "sub/dir/model-00001-of-00002.safetensors",
        "data/train-00000-of-00001.parquet",
        "model.onnx",
        "onnx/decoder.onnx",
        "flax_model.msgpack",
        "tf_model.h5",
        "model.gguf",
        "archive.tar.gz",
        "archive.tar",
        "spiece.model",
        "events.out.tfevents.1700000000.host",
        "saved_model/variables/variables.data-00000-of-00001",
        "saved_model/x",
        "audio/clip.wav",
        "images/cat.png",
        "weights.pt",
        "file.lfs.json",
    ],
)
def test_hub_defaults_store_in_lfs(path: str) -> None:
    assert HUB.is_lfs(path)


@pytest.mark.parametrize(
    "path",
    [
        "config.json",
        "README.md",
        ".gitattributes",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "merges.txt",
        "generation_config.json",
        "model.safetensors.index.json",
        "sub/config.json",
        "binary",  # no extension
        "safetensors",
        "model.bin.txt",
        "other/saved_model/x",  # the saved_model rule is anchored at the root
    ],
)
def test_hub_defaults_keep_small_files_in_git(path: str) -> None:
    assert not HUB.is_lfs(path)


def test_gitattributes_filter_lfs() -> None:
    rules = LfsRules.from_gitattributes(
        "# comment line\n"
        "\n"
        "*.bin filter=lfs diff=lfs merge=lfs -text\n"
        "*.json text\n"  # no filter attribute: ignored
    )
    assert rules.is_lfs("model.bin")
    assert rules.is_lfs("deep/dir/model.bin")
    assert not rules.is_lfs("config.json")
    assert not rules.is_lfs("model.safetensors")  # the hub defaults do not apply once a file exists


def test_gitattributes_last_match_wins() -> None:
    rules = LfsRules.from_gitattributes(
        "*.bin filter=lfs diff=lfs merge=lfs -text\n"
        "small.bin -filter -diff -merge text\n"
        "*.txt filter=lfs\n"
        "*.txt -filter\n"
        "*.txt filter=lfs\n"
        "keep.json !filter\n"
        "*.json filter=lfs\n"
        "other.dat filter=lfs\n"
        "other.dat filter=something-else\n"
    )
    assert rules.is_lfs("big.bin")
    assert not rules.is_lfs("small.bin")
    assert not rules.is_lfs("sub/small.bin")
    assert rules.is_lfs("notes.txt")
    assert rules.is_lfs("keep.json")  # the later *.json line wins over !filter
    assert not rules.is_lfs("other.dat")


def test_gitattributes_patterns_with_a_slash_are_anchored() -> None:
    rules = LfsRules.from_gitattributes(
        "data/*.json filter=lfs\n"
        "/root.txt filter=lfs\n"
        "**/big/* filter=lfs\n"
        "weights/** filter=lfs\n"
    )
    assert rules.is_lfs("data/a.json")
    assert not rules.is_lfs("other/data/a.json")
    assert not rules.is_lfs("data/sub/a.json")  # "*" does not cross "/"
    assert not rules.is_lfs("a.json")
    assert rules.is_lfs("root.txt")
    assert not rules.is_lfs("sub/root.txt")
    assert rules.is_lfs("big/x")
    assert rules.is_lfs("a/b/big/x")
    assert not rules.is_lfs("a/big/x/y")
    assert rules.is_lfs("weights/a")
    assert rules.is_lfs("weights/a/b/c")
    assert not rules.is_lfs("weights")
    assert not rules.is_lfs("sub/weights/a")


def test_gitattributes_character_classes_and_question_mark() -> None:
    rules = LfsRules.from_gitattributes("model-?.bin filter=lfs\nshard[0-9].pt filter=lfs\n[broken filter=lfs\n")
    assert rules.is_lfs("model-1.bin")
    assert not rules.is_lfs("model-12.bin")
    assert rules.is_lfs("shard3.pt")
    assert not rules.is_lfs("shardx.pt")
    assert rules.is_lfs("[broken")


def test_pattern_without_slash_matches_basename_only() -> None:
    rules = LfsRules.from_gitattributes("model* filter=lfs\n")
    assert rules.is_lfs("model.bin")
    assert rules.is_lfs("a/b/model.bin")
    assert not rules.is_lfs("models/config.json")  # the folder name does not count


def test_empty_gitattributes_means_nothing_is_lfs() -> None:
    rules = LfsRules.from_gitattributes("")
    assert not rules.is_lfs("model.safetensors")


def test_windows_line_endings() -> None:
    rules = LfsRules.from_gitattributes("*.bin filter=lfs diff=lfs merge=lfs -text\r\n*.md -filter\r\n")
    assert rules.is_lfs("x.bin")
    assert not rules.is_lfs("x.md")
