"""transformers loads acme/tiny through hubgate (S3 store, LFS by 302 to the object store) and
generates exactly what the same model loaded from the source folder generates.

One subprocess (transformers reads HF_ENDPOINT at import time); it loads the local folder and the
hub copy in turn, with AutoConfig / AutoTokenizer / AutoModelForCausalLM and pipeline().
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.hubgate import HubgateServer
from helpers.subproc import client_env, run_script

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("server", ["hubgate_s3_redirect", "hubgate_s3_redirect_rgw"], ids=["moto", "rgw"])
def test_transformers_loads_and_generates_like_the_source_folder(
    server: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    hub: HubgateServer = request.getfixturevalue(server)
    sha = hub.commits["tiny"]
    with hub.recording() as log:
        result = run_script(
            "transformers_client.py",
            {"repo": "acme/tiny", "local": str(hub.repos["tiny"].folder), "prompt": "hello world"},
            client_env(hub.base_url, tmp_path / "hf-home"),
        )
    local, remote = result["local"], result["hub"]
    assert result["endpoint"] == hub.base_url
    assert remote["config"] == local["config"] == {
        "model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_positions": 1024, "vocab_size": local["config"]["vocab_size"],
    }
    assert remote["config_class"] == "GPT2Config"
    assert remote["tokenizer_class"] == local["tokenizer_class"]
    assert remote["model_class"] == local["model_class"] == "GPT2LMHeadModel"
    assert remote["prompt_ids"] == local["prompt_ids"]
    assert remote["weights"] == local["weights"]
    # greedy generation, do_sample=False, max_new_tokens=8: token for token the same
    assert remote["generated_ids"] == local["generated_ids"]
    assert len(local["generated_ids"]) > len(local["prompt_ids"])
    assert remote["generated_text"] == local["generated_text"]
    assert remote["pipeline_text"] == local["pipeline_text"]
    assert remote["pipeline_text"].startswith("hello world")
    assert remote["pipeline_task"] == "text-generation"
    assert result["inferred_task"] == "text-generation"  # from hubgate's pipeline_tag
    assert all(text.startswith("hello") for text in result["readme_example"])
    assert result["cache_snapshots"] == [sha] and result["cache_ref_main"] == sha
    assert result["refused_hosts"] == []

    records = log.records
    assert records, "transformers talked to hubgate"
    assert all(r.status is not None and r.status < 500 for r in records)
    assert ("GET", "/api/models/acme/tiny") in log.calls
    weights = [r for r in records if r.path.endswith("/model.safetensors")]
    assert weights and all(r.method == "HEAD" and r.status == 302 for r in weights)  # bytes came from S3
    assert any(r.method == "GET" and r.path == f"/acme/tiny/resolve/{sha}/config.json" for r in records)
    # optional files: 404 EntryNotFound with the commit, so transformers can cache the miss
    misses = [r for r in records if r.status == 404 and "/resolve/" in r.path]
    assert misses
    for r in misses:
        assert r.header("x-error-code") == "EntryNotFound" and r.header("x-repo-commit") == sha, r.path
    templates = [r for r in records if "/tree/" in r.path and r.path.endswith("additional_chat_templates")]
    assert templates and all(r.header("x-error-code") == "EntryNotFound" for r in templates)
