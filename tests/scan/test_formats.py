"""Format detection from bytes, and names that promise another format."""

from __future__ import annotations

import gzip
import pickle

import pytest

from mirror.scan.formats import check_name, detect, looks_like_old_pickle
from mirror.scan.sources import BytesSource

from . import corpus


@pytest.mark.parametrize("build,fmt", [
    (lambda: b"", "empty"),
    (lambda: pickle.dumps({"a": 1}, protocol=2), "pickle"),
    (lambda: pickle.dumps({"a": 1}, protocol=5), "pickle"),
    (lambda: pickle.dumps({"a": [1, 2, "x"]}, protocol=0), "pickle"),
    (lambda: pickle.dumps({"a": [1, 2, "x"]}, protocol=1), "pickle"),
    (lambda: corpus.torch_state_dict(legacy=True), "torch-legacy"),
    (lambda: corpus.torch_state_dict(), "torch-zip"),
    (lambda: corpus.npz({"a.npy": corpus.npy([1, 2])}), "npz"),
    (lambda: corpus.zip_of({"a.csv": b"x"}), "zip"),
    (lambda: b"\x00" * 64 + corpus.torch_state_dict(), "torch-zip"),
    (lambda: corpus.npy([1.0]), "numpy"),
    (lambda: corpus.safetensors({}), "safetensors"),
    (lambda: corpus.gguf(), "gguf"),
    (lambda: corpus.onnx_model(), "onnx"),
    (lambda: b"\x89HDF\r\n\x1a\n" + b"\0" * 32, "hdf5"),
    (lambda: b"7z\xbc\xaf\x27\x1c\0\4", "7z"),
    (lambda: gzip.compress(b"x"), "gzip"),
    (lambda: corpus.parquet_file(), "parquet"),
    (lambda: corpus.tar_of({"a.csv": b"x"}), "tar"),
    (lambda: '{"a": "é"}\n'.encode(), "text"),
    (lambda: b"0.5\n", "text"),
    (lambda: b"hello world, a line of text\n", "text"),
    (lambda: b"a,b\n1,2\n", "text"),
    (lambda: bytes(range(256)), "binary"),
])
def test_detect(build, fmt: str) -> None:  # type: ignore[no-untyped-def]
    assert detect(BytesSource(build())) == fmt


@pytest.mark.parametrize("text", [b"N.", b"(lp0\nI1\naI2\na.", b"I1\n."])
def test_old_protocol_pickles_are_recognised_by_parsing(text: bytes) -> None:
    assert looks_like_old_pickle(text, whole=True)


@pytest.mark.parametrize("text", [b"0.", b"Hello\n", b"I am text\n", b"la la la\n", b"(\n", b"hq\x00."])
def test_text_that_happens_to_start_with_opcodes_is_not_a_pickle(text: bytes) -> None:
    assert not looks_like_old_pickle(text, whole=True)


@pytest.mark.parametrize("path,fmt,blocked", [
    ("model.safetensors", "safetensors", False),
    ("model.safetensors", "pickle", True),
    ("model.safetensors", "binary", True),
    ("config.json", "pickle", True),
    ("config.json", "text", False),
    ("notes.txt", "zip", True),
    ("flax_model.msgpack", "binary", False),
    ("flax_model.msgpack", "torch-zip", True),
    ("tf_model.h5", "pickle", True),
    ("model.gguf", "pickle", True),
    ("model.onnx", "zip", True),
    ("pytorch_model.bin", "torch-zip", False),
    ("pytorch_model.bin", "binary", False),
    ("pytorch_model.bin", "zip", True),
    ("model.pt", "torch-legacy", False),
    ("weights", "pickle", False),
    ("tokenizer.model", "pickle", True),
    ("tokenizer.model", "binary", False),
    ("data.parquet", "parquet", False),
    ("MODEL.SAFETENSORS", "pickle", True),
    ("model.safetensors", "binary", True),  # a loader would misread it
    ("model.safetensors", "text", True),
    ("model.npy", "binary", True),
    ("data.csv", "gzip", True),  # an archive hiding under a text name
    ("tf_model.h5", "zip", True),
])
def test_name_mismatch(path: str, fmt: str, blocked: bool) -> None:
    findings = check_name(path, fmt)
    assert [f.severity for f in findings] == (["block"] if blocked else [w.severity for w in findings if w.severity == "warn"])
    assert all(f.rule == "format.mismatch" and f.data["detected"] == fmt for f in findings)


@pytest.mark.parametrize(("path", "fmt"), [
    ("a.bin", "text"),  # text in a generic .bin: nothing a loader could run
    ("data/test.parquet", "binary"),
    ("tf_model.h5", "binary"),
    ("notes.txt", "binary"),
    ("config.json", "binary"),
])
def test_a_harmless_mismatch_is_a_warning_not_a_block(path: str, fmt: str) -> None:
    (finding,) = check_name(path, fmt)
    assert (finding.rule, finding.severity, finding.data["detected"]) == ("format.mismatch", "warn", fmt)
