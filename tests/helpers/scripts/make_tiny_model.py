"""Build the tiny GPT-2 fixture with transformers' own save_pretrained. Usage: make_tiny_model.py OUT_DIR"""

import sys

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

out = sys.argv[1]
tok = Tokenizer(models.BPE(unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.ByteLevel()
tok.train_from_iterator(
    ["hello world", "the quick brown fox", "hubgate mirrors models", "a tiny model for tests"],
    trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<|endoftext|>"]),
)
fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|endoftext|>",
                               bos_token="<|endoftext|>")
eos = fast.convert_tokens_to_ids("<|endoftext|>")
cfg = GPT2Config(vocab_size=len(fast), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                 bos_token_id=eos, eos_token_id=eos)
torch.manual_seed(0)
GPT2LMHeadModel(cfg).save_pretrained(out)
fast.save_pretrained(out)
print("built", out)
