"""Safetensors header validation reads only 8 + N bytes, whatever the file size."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from mirror.scan import safetensors as st
from mirror.scan.sources import FileSource


class _CountingSource:
    def __init__(self, inner: FileSource) -> None:
        self.inner, self.size, self.read = inner, inner.size, 0

    def read_at(self, offset: int, length: int) -> bytes:
        data = self.inner.read_at(offset, length)
        self.read += len(data)
        return data


def test_one_gib_file_is_validated_from_its_header_alone(tmp_path: Path) -> None:
    gib = 1 << 30
    header = json.dumps({"w": {"dtype": "U8", "shape": [gib], "data_offsets": [0, gib]}}).encode()
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + gib)  # sparse: no GiB written
    with open(path, "rb") as f:
        src = _CountingSource(FileSource(f, path.stat().st_size))
        started = time.perf_counter()
        findings, count = st.validate(src)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
    assert findings == [] and count == 1
    assert src.read == 8 + len(header)
    assert elapsed < 0.5


class _HugeHeader:
    size = 8 + 100_000_104

    def read_at(self, offset: int, length: int) -> bytes:
        assert offset == 0, "must reject before reading the header"
        return struct.pack("<Q", 100_000_104)


def test_header_over_the_limit_is_rejected_before_it_is_read() -> None:
    findings, _ = st.validate(_HugeHeader())  # type: ignore[arg-type]
    assert [f.rule for f in findings] == ["safetensors.header-length"]


def test_tensor_count_cap(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from mirror.scan.sources import BytesSource

    from .corpus import safetensors

    monkeypatch.setattr(st, "MAX_TENSORS", 3)
    header = {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(4)}
    findings, count = st.validate(BytesSource(safetensors(header)))
    assert count == 4 and [f.rule for f in findings] == ["safetensors.tensor-count"]
