"""Load a causal LM with transformers from HF_ENDPOINT (hubgate) and from a local folder; generate greedily.

Usage: transformers_client.py '{"repo": "acme/tiny", "local": "/path/to/folder", "prompt": "hello world"}'
Prints one line ``RESULT {json}``.
"""

import netguard  # noqa: F401  (first: loopback only)

import hashlib
import json
import sys
from pathlib import Path

import torch
from huggingface_hub import constants
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, pipeline

args = json.loads(sys.argv[1])
prompt = args["prompt"]


def weights_digest(model) -> str:  # type: ignore[no-untyped-def]
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def load_and_generate(source: str) -> dict:  # type: ignore[type-arg]
    config = AutoConfig.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source)
    model.eval()
    enc = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=8, pad_token_id=tokenizer.eos_token_id)
    pipe = pipeline("text-generation", model=source)
    text = pipe(prompt, do_sample=False, max_new_tokens=8)[0]["generated_text"]
    return {
        "config": {k: getattr(config, k) for k in ("model_type", "n_embd", "n_layer", "n_positions", "vocab_size")},
        "config_class": type(config).__name__,
        "tokenizer_class": type(tokenizer).__name__,
        "prompt_ids": enc["input_ids"][0].tolist(),
        "model_class": type(model).__name__,
        "weights": weights_digest(model),
        "generated_ids": out[0].tolist(),
        "generated_text": tokenizer.decode(out[0]),
        "pipeline_text": text,
        "pipeline_task": pipe.task,
    }


result = {"endpoint": constants.ENDPOINT, "local": load_and_generate(args["local"]), "hub": load_and_generate(args["repo"])}
# pipeline() without a task: transformers asks the Hub (hubgate) for the repo's pipeline_tag.
result["inferred_task"] = pipeline(model=args["repo"]).task
# README.md's first example, verbatim: default generation settings (sampling, the model's own length limits).
readme_pipe = pipeline("text-generation", model=args["repo"])
result["readme_example"] = []
for seed in range(10):  # seeded, so that a model too short for the default length fails every run
    torch.manual_seed(seed)
    result["readme_example"].append(readme_pipe("hello")[0]["generated_text"])

cache = Path(constants.HF_HUB_CACHE) / ("models--" + args["repo"].replace("/", "--"))
result["cache_snapshots"] = sorted(p.name for p in (cache / "snapshots").iterdir()) if cache.is_dir() else []
result["cache_ref_main"] = (cache / "refs" / "main").read_text() if (cache / "refs" / "main").is_file() else None
result["refused_hosts"] = sorted(set(netguard.refused))
result["refused_where"] = netguard.where
sys.stdout.flush()
print("RESULT " + json.dumps(result))
