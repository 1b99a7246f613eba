"""sentence-transformers in a fresh interpreter (HF_ENDPOINT, HF_HUB_DISABLE_XET are read at import).

``python st_client.py build OUT``: write a tiny sentence-transformers model to OUT (a 1-layer BERT with a
WordPiece tokenizer made here, then mean pooling and normalisation, saved with ``SentenceTransformer.save``;
no network), and OUT/../<name>.embeddings.json: the embeddings of SENTENCES by the model loaded back from OUT.

``python st_client.py load REPO``: ``SentenceTransformer(REPO)`` (through HF_ENDPOINT); prints
``RESULT {"embeddings": [...], "cache": {path: sha256}}``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SENTENCES = ["hello world", "the quick brown fox", "hubgate mirrors models", "an unknown word: zebra"]
WORDS = ["hello", "world", "the", "quick", "brown", "fox", "hub", "##gate", "mirror", "##s", "model", "an", "un",
         "##known", "word", ":"]


def _torch_deterministic() -> None:
    import torch

    torch.set_num_threads(1)  # the same reduction order in every process: equal floats, not just close ones


def embed(model) -> list[list[float]]:  # type: ignore[no-untyped-def]
    return model.encode(SENTENCES, convert_to_numpy=True).astype("float32").tolist()  # type: ignore[no-any-return]


def build(out: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    _torch_deterministic()
    base = out.with_name(out.name + ".base")
    base.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz"]
    (base / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(base / "vocab.txt"), do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(base)
    tok.save_pretrained(base)
    transformer = Transformer(str(base), max_seq_length=32)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean"),
                                         Normalize()])
    model.save(str(out))
    reference = embed(SentenceTransformer(str(out)))
    out.with_name(out.name + ".embeddings.json").write_text(json.dumps(reference))


def load(repo: str) -> None:
    from sentence_transformers import SentenceTransformer

    from tests.xet.xet_client import cache_listing

    _torch_deterministic()
    embeddings = embed(SentenceTransformer(repo))
    hub = Path(os.environ["HF_HOME"]) / "hub"
    print("RESULT " + json.dumps({"embeddings": embeddings, "cache": cache_listing(hub)}))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    {"build": lambda a: build(Path(a)), "load": load}[sys.argv[1]](sys.argv[2])
