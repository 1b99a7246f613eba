from __future__ import annotations

import io
import json

import pytest

from mirror.repoinfo import build_info, describe, parse_front_matter
from mirror.storage.blobs import BlobStore
from registry.types import RepoType

from .conftest import make_manifest

CARD = """---
license: apache-2.0
language:
- en
- fr
tags:
- text-generation
- tiny
datasets:
- acme/corpus
base_model: acme/base
pipeline_tag: text-generation
library_name: transformers
---
# Tiny model

Some text with --- dashes.
"""


def test_front_matter_parsed() -> None:
    data = parse_front_matter(CARD)
    assert data is not None
    assert data["license"] == "apache-2.0"
    assert data["language"] == ["en", "fr"]
    assert data["base_model"] == "acme/base"


def test_front_matter_crlf() -> None:
    assert parse_front_matter("---\r\nlicense: mit\r\n---\r\n# x\r\n") == {"license": "mit"}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# Just a title\n---\nlicense: mit\n---\n",  # not at the top
        "---\nlicense: mit\n",  # never closed
        "---\nlicense: [unclosed\n---\n",  # invalid YAML
        "---\n- a\n- b\n---\n",  # a list, not a mapping
        "---\njust a string\n---\n",
        "---\n---\n",  # empty
    ],
    ids=["empty", "not-at-top", "unclosed", "bad-yaml", "list", "scalar", "empty-block"],
)
def test_front_matter_absent_or_invalid(text: str) -> None:
    assert parse_front_matter(text) is None


def test_front_matter_is_safe_yaml() -> None:
    assert parse_front_matter("---\nx: !!python/object/apply:os.system ['true']\n---\n") is None


def test_build_info_from_card_and_config() -> None:
    m = make_manifest(files={"README.md": b"", "config.json": b"{}", "model.safetensors": b"w"})
    info = build_info(m, parse_front_matter(CARD), {"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
    assert info["license"] == "apache-2.0"
    assert info["library_name"] == "transformers"
    assert info["pipeline_tag"] == "text-generation"
    assert info["config"] == {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    assert info["cardData"]["license"] == "apache-2.0"
    assert info["tags"] == [
        "text-generation", "tiny", "transformers", "safetensors", "llama", "en", "fr",
        "dataset:acme/corpus", "base_model:acme/base", "license:apache-2.0",
    ]
    assert len(info["tags"]) == len(set(info["tags"]))


def test_build_info_infers_from_config_only() -> None:
    m = make_manifest(files={"config.json": b"{}", "pytorch_model.bin": b"w"})
    info = build_info(m, None, {"architectures": ["GPT2LMHeadModel", "GPT2ForCausalLM"], "model_type": "gpt2"})
    assert info["library_name"] == "transformers"
    assert info["pipeline_tag"] == "text-generation"
    assert info["cardData"] is None and info["license"] is None
    assert "safetensors" not in info["tags"]
    assert info["tags"] == ["transformers", "gpt2", "text-generation"]


def test_build_info_card_pipeline_wins_over_inference() -> None:
    m = make_manifest(files={"config.json": b"{}"})
    info = build_info(m, {"pipeline_tag": "feature-extraction", "library_name": "sentence-transformers"},
                      {"architectures": ["XForCausalLM"]})
    assert info["pipeline_tag"] == "feature-extraction"
    assert info["library_name"] == "sentence-transformers"


def test_build_info_without_anything() -> None:
    m = make_manifest(files={"data.csv": b"a,b\n"})
    info = build_info(m, None, None)
    assert info == {"cardData": None, "license": None, "library_name": None, "pipeline_tag": None,
                    "tags": [], "config": None}


def test_build_info_for_dataset_does_not_guess_a_library() -> None:
    m = make_manifest(files={"config.json": b"{}"}, repo_type=RepoType.DATASET)
    info = build_info(m, {"license": "mit", "tags": "single-tag"}, {"architectures": ["XForCausalLM"]})
    assert info["library_name"] is None
    assert info["pipeline_tag"] is None
    assert info["tags"] == ["single-tag", "license:mit"]


def test_build_info_ignores_wrongly_typed_card_values() -> None:
    m = make_manifest(files={"a": b""})
    info = build_info(m, {"license": ["mit"], "tags": [1, None, "ok", "ok"], "pipeline_tag": 3, "library_name": {}}, None)
    assert info["license"] is None
    assert info["pipeline_tag"] is None
    assert info["library_name"] is None
    assert info["tags"] == ["ok"]


def test_describe_reads_readme_and_config_from_the_store(store: BlobStore) -> None:
    config = json.dumps({"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096}).encode()
    files = {"README.md": CARD.encode(), "config.json": config}
    for data in files.values():
        store.ingest_file(io.BytesIO(data), size=len(data))
    m = make_manifest(files=files)
    info = describe(store, m)
    assert info["config"] == {"architectures": ["MistralForCausalLM"], "model_type": "mistral"}
    assert info["license"] == "apache-2.0"
    assert "mistral" in info["tags"]


def test_describe_survives_a_bad_config(store: BlobStore) -> None:
    files = {"config.json": b"{not json"}
    for data in files.values():
        store.ingest_file(io.BytesIO(data), size=len(data))
    info = describe(store, make_manifest(files=files))
    assert info["config"] is None
