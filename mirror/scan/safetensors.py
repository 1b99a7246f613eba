"""Strict safetensors header validation (security.md §4): reads ``8 + N`` bytes, never a tensor.

The ``safetensors`` library accepts a few files its own spec forbids (duplicate tensor keys, where
the last one wins; unknown fields in an entry; a header starting with a space). Loaders and this
validator must never disagree about what a file holds, so every rule of the spec is enforced here.
Sizes are computed with Python ints, so shapes like ``[2**62, 2**62]`` cannot overflow.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

from .base import FileScan, ScanContext, ScanFinding, ScanItem, Source

MAX_HEADER = 100_000_000  # the library's own limit
MAX_TENSORS = 1_000_000
MAX_NAME = 1024
MAX_FINDINGS = 10
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16,
    "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "F64": 64, "I64": 64, "U64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}


class _Reject(Exception):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def validate(src: Source) -> tuple[list[ScanFinding], int]:
    """Findings (all blocking) and the number of tensors; reads only the header."""
    try:
        header = _read_header(src)
        doc = _parse(header)
    except _Reject as e:
        return [ScanFinding(f"safetensors.{e.rule}", str(e))], 0
    findings: list[ScanFinding] = []
    spans: list[tuple[int, int, str]] = []
    for name, entry in doc.items():
        if len(findings) >= MAX_FINDINGS:
            break
        try:
            if name == "__metadata__":
                _check_metadata(entry)
            else:
                spans.append(_check_entry(name, entry))
        except _Reject as e:
            findings.append(ScanFinding(f"safetensors.{e.rule}", str(e), data={"tensor": name[:MAX_NAME]}))
    if len(spans) > MAX_TENSORS:
        findings.append(ScanFinding("safetensors.tensor-count", f"{len(spans)} tensors (limit {MAX_TENSORS})"))
    if not findings:
        findings += _check_layout(spans, src.size - 8 - len(header))
    return findings, len(spans)


def _read_header(src: Source) -> bytes:
    if src.size < 8:
        raise _Reject("header-length", f"file of {src.size} bytes has no header length")
    n = struct.unpack("<Q", src.read_at(0, 8))[0]
    if n < 2 or n > MAX_HEADER or 8 + n > src.size:
        raise _Reject("header-length", f"header length {n} is outside 2..{MAX_HEADER} or past the file end")
    header = src.read_at(8, n)
    if header[:1] != b"{":
        raise _Reject("header-start", "header does not start with '{'")
    body = header.rstrip(b" ")
    if not body.endswith(b"}"):
        raise _Reject("padding", "header is not a JSON object padded only with spaces")
    return header


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Reject("duplicate-key", f"duplicate key {k[:MAX_NAME]!r}")
        out[k] = v
    return out


def _no_constant(name: str) -> Any:
    raise _Reject("json", f"header holds {name}")


def _parse(header: bytes) -> dict[str, Any]:
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Reject("utf8", f"header is not UTF-8: {e.reason} at byte {e.start}") from None
    try:
        doc = json.loads(text.rstrip(" "), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise _Reject("json", f"header is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise _Reject("json", "header is not a JSON object")
    return doc


def _check_metadata(meta: Any) -> None:
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _Reject("metadata", "__metadata__ must map strings to strings")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_entry(name: str, entry: Any) -> tuple[int, int, str]:
    if not name or len(name) > MAX_NAME or any(ord(c) < 0x20 or c == "\x7f" for c in name):
        raise _Reject("name", "tensor name is empty, too long or holds control characters")
    if not isinstance(entry, dict) or set(entry) != _ENTRY_KEYS:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise _Reject("entry", f"tensor {name[:80]!r} must have exactly dtype, shape, data_offsets (has {keys})")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_BITS:
        raise _Reject("dtype", f"tensor {name[:80]!r} has unknown dtype {str(dtype)[:40]!r}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise _Reject("shape", f"tensor {name[:80]!r} shape is not a list of non-negative ints")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) and o >= 0 for o in offsets)
            or offsets[0] > offsets[1]):
        raise _Reject("offsets", f"tensor {name[:80]!r} data_offsets must be [begin, end], 0 <= begin <= end")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != offsets[1] - offsets[0]:
        raise _Reject("size", f"tensor {name[:80]!r}: shape {shape[:8]} x {dtype} is {bits} bits, "
                              f"but its offsets span {offsets[1] - offsets[0]} bytes")
    return offsets[0], offsets[1], name


def _check_layout(spans: list[tuple[int, int, str]], data_size: int) -> list[ScanFinding]:
    """Sorted by begin: from 0, no gap, no overlap, and the last end is exactly the end of the file."""
    at = 0
    for begin, end, name in sorted(spans):
        if begin != at:
            what = "overlaps the previous tensor" if begin < at else f"leaves a gap after byte {at}"
            return [ScanFinding("safetensors.layout", f"tensor {name[:80]!r} at {begin} {what}",
                                data={"tensor": name[:MAX_NAME]})]
        at = end
    if at != data_size:
        what = "trailing bytes after the last tensor" if at < data_size else "tensors run past the end of the file"
        return [ScanFinding("safetensors.coverage", f"{what}: tensors cover {at} of {data_size} data bytes")]
    return []


class SafetensorsScanner:
    """Applies to files detected as safetensors and to anything named ``.safetensors``."""

    name = "safetensors"

    def applies(self, fmt: str, path: str) -> bool:
        return fmt == "safetensors" or path.lower().endswith(".safetensors")

    def scan(self, src: Source, item: ScanItem, ctx: ScanContext, out: FileScan) -> None:
        findings, count = validate(src)
        out.findings.extend(findings)
        out.facts["tensors"] = count
