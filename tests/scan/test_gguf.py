"""GGUF: files written by the reference writer pass; the type table matches gguf's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mirror.scan.gguf import GGML_TYPES

from .conftest import rules
from .corpus import CHATML_TEMPLATE, SSTI_TEMPLATES


def _write(path: Path, template: str) -> bytes:
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_chat_template(template)
    w.add_tensor("tok_embd.weight", np.zeros((4, 32), dtype=np.float32))
    w.add_tensor("q", np.zeros((2, 64), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def test_reference_writer_output_passes_and_its_template_is_hashed(tmp_path: Path, scan) -> None:  # type: ignore[no-untyped-def]
    import hashlib

    result = scan("model.gguf", _write(tmp_path / "w.gguf", CHATML_TEMPLATE))
    assert result.format == "gguf" and result.verdict == "pass", result.findings
    assert result.facts["chat_template_sha256"] == hashlib.sha256(CHATML_TEMPLATE.encode()).hexdigest()


def test_reference_writer_with_hostile_template_blocks(tmp_path: Path, scan) -> None:  # type: ignore[no-untyped-def]
    result = scan("model.gguf", _write(tmp_path / "w.gguf", SSTI_TEMPLATES["class-mro"]))
    assert "template.dunder" in rules(result)


def test_type_table_matches_gguf_constants() -> None:
    constants = pytest.importorskip("gguf.constants")
    assert {int(k): v for k, v in constants.GGML_QUANT_SIZES.items()} == GGML_TYPES
