"""Write a tiny random GPT-2 (with a BPE tokenizer and a model card) to a folder, for trying hubgate out.

Usage: python examples/make_tiny_model.py ./tiny-model
"""

import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

CARD = """---
license: mit
library_name: transformers
pipeline_tag: text-generation
tags: [tiny, example]
---
# tiny

A 1-layer random GPT-2 for trying hubgate out.
"""


def main(out: Path) -> None:
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<|endoftext|>"])
    tok.train_from_iterator(["hello world", "the quick brown fox", "hubgate mirrors models"], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    eos = fast.convert_tokens_to_ids("<|endoftext|>")
    config = GPT2Config(
        vocab_size=fast.vocab_size, n_positions=1024, n_embd=32, n_layer=1, n_head=2, bos_token_id=eos, eos_token_id=eos
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(out)
    fast.save_pretrained(out)
    (out / "README.md").write_text(CARD)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-model"))
