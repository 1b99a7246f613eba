"""GGUF structural validation (security.md §5.1): a hand-written, bounded header walker.

Why not the ``gguf`` package's reader: it memory-maps the whole file and builds numpy views of
every array, which costs address space the scan child limits, and its errors (``IndexError``,
``ValueError``) do not say which rule broke. This walker reads forward through the header in 1 MiB
chunks, checks every count and length against the bytes that remain before trusting it (huge
counts and lengths are what overflowed llama.cpp's and Ollama's parsers), and never reads tensor data.

Checked: magic, version 2 or 3, counts within caps and the file size, every string and array
length, value types, duplicate keys and tensor names, ``general.alignment`` (a u32 power of two),
tensor dims and types, and that every tensor's bytes are aligned, inside the file and disjoint.
Every ``tokenizer.chat_template*`` string goes through the chat-template check.
"""

from __future__ import annotations

import math
import struct

from .base import FileScan, ScanContext, ScanFinding, ScanItem, Source
from .templates import check_template, template_facts

MAX_TENSORS = 1_000_000
MAX_KV = 1_000_000
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_KEY = 1 << 16
KEEP_STRING = 1 << 20  # string values held (templates); longer ones are skipped
CHUNK = 1 << 20
# GGML type id -> (elements per block, bytes per block); tests/scan checks it against gguf.constants.
GGML_TYPES = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
}
# GGUF value type -> struct format of a scalar (8: string, 9: array are special).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class GGUFError(ValueError):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


class _Reader:
    """Forward reads over a Source with a bounded buffer; every length is checked against the file first."""

    def __init__(self, src: Source) -> None:
        self.src, self.pos, self._buf, self._base = src, 0, b"", 0

    def take(self, n: int) -> bytes:
        if n > self.src.size - self.pos:
            raise GGUFError("gguf.truncated", f"needs {n} bytes at byte {self.pos}, the file ends first")
        rel = self.pos - self._base
        if rel + n > len(self._buf):
            self._base, rel = self.pos, 0
            self._buf = self.src.read_at(self.pos, max(n, CHUNK))
        self.pos += n
        return self._buf[rel:rel + n]

    def unpack(self, fmt: str) -> int | float | bool:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]  # type: ignore[no-any-return]

    def u32(self) -> int:
        return int(self.unpack("<I"))

    def u64(self) -> int:
        return int(self.unpack("<Q"))

    def skip(self, n: int) -> None:
        if n > self.src.size - self.pos:
            raise GGUFError("gguf.truncated", f"a value of {n} bytes at byte {self.pos} runs past the file end")
        self.pos += n

    def string(self, keep: int) -> str | None:
        """A u64-length string: decoded if at most ``keep`` bytes, else skipped (None)."""
        n = self.u64()
        if n > keep:
            self.skip(n)
            return None
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError("gguf.string", f"string before byte {self.pos} is not UTF-8") from None


def _value(r: _Reader, vtype: int, keep: int) -> object:
    if vtype in _SCALARS:
        return r.unpack(_SCALARS[vtype])
    if vtype == _STRING:
        return r.string(keep)
    if vtype == _ARRAY:
        etype, count = r.u32(), r.u64()
        if etype in _SCALARS:
            r.skip(count * struct.calcsize(_SCALARS[etype]))
        elif etype == _STRING:
            if count * 8 > r.src.size - r.pos:
                raise GGUFError("gguf.count", f"array of {count} strings cannot fit in the file")
            for _ in range(count):
                r.skip(r.u64())
        else:
            raise GGUFError("gguf.type", f"array element type {etype} is not a GGUF scalar or string")
        return None
    raise GGUFError("gguf.type", f"unknown value type {vtype} at byte {r.pos}")


def validate(src: Source) -> tuple[list[ScanFinding], dict[str, str]]:
    """Blocking findings, and the chat templates found (key -> template)."""
    templates: dict[str, str] = {}
    try:
        _walk(_Reader(src), templates)
    except GGUFError as e:
        return [ScanFinding(e.rule, str(e))], templates
    return [], templates


def _walk(r: _Reader, templates: dict[str, str]) -> None:
    if r.take(4) != b"GGUF":
        raise GGUFError("gguf.magic", "file does not start with GGUF")
    version = r.u32()
    if version not in (2, 3):
        raise GGUFError("gguf.version", f"GGUF version {version} (only 2 and 3 are accepted)")
    n_tensors, n_kv = r.u64(), r.u64()
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV or n_tensors * 24 + n_kv * 13 > r.src.size:
        raise GGUFError("gguf.count", f"{n_tensors} tensors and {n_kv} keys cannot fit a {r.src.size}-byte file")
    alignment = 32
    keys: set[str] = set()
    for _ in range(n_kv):
        key = r.string(MAX_KEY)
        if key is None or key in keys:
            raise GGUFError("gguf.duplicate-key" if key else "gguf.key", f"duplicate or oversized key {key!r}")
        keys.add(key)
        vtype = r.u32()
        value = _value(r, vtype, KEEP_STRING if key.startswith("tokenizer.chat_template") else 0)
        if key == "general.alignment":
            if vtype != 4 or not isinstance(value, int) or value <= 0 or value & (value - 1):
                raise GGUFError("gguf.alignment", f"general.alignment {value!r} is not a u32 power of two")
            alignment = value
        elif key.startswith("tokenizer.chat_template"):
            if not isinstance(value, str):
                raise GGUFError("gguf.template", f"{key} is not a string of at most {KEEP_STRING} bytes")
            templates[key] = value
    _tensors(r, n_tensors, alignment)


def _tensors(r: _Reader, n_tensors: int, alignment: int) -> None:
    infos: list[tuple[int, int, str]] = []
    names: set[str] = set()
    for _ in range(n_tensors):
        name = r.string(MAX_KEY)
        if name is None or name in names:
            raise GGUFError("gguf.tensor", f"duplicate or oversized tensor name {name!r}")
        names.add(name)
        n_dims = r.u32()
        if n_dims > MAX_DIMS:
            raise GGUFError("gguf.tensor", f"tensor {name!r} has {n_dims} dims (max {MAX_DIMS})")
        dims = [r.u64() for _ in range(n_dims)]
        ttype, offset = r.u32(), r.u64()
        if ttype not in GGML_TYPES:
            raise GGUFError("gguf.tensor", f"tensor {name!r} has unknown type {ttype}")
        block, block_bytes = GGML_TYPES[ttype]
        if dims and dims[0] % block:
            raise GGUFError("gguf.tensor", f"tensor {name!r}: first dim {dims[0]} is not a multiple of {block}")
        nbytes = math.prod(dims) // block * block_bytes
        if offset % alignment:
            raise GGUFError("gguf.tensor", f"tensor {name!r} offset {offset} is not aligned to {alignment}")
        infos.append((offset, offset + nbytes, name))
    data_start = -(-r.pos // alignment) * alignment
    end_prev = 0
    for begin, end, name in sorted(infos):
        if begin < end_prev:
            raise GGUFError("gguf.tensor", f"tensor {name!r} overlaps the previous tensor")
        if data_start + end > r.src.size:
            raise GGUFError("gguf.tensor", f"tensor {name!r} ends at byte {data_start + end}, past the file end")
        end_prev = end


class GGUFScanner:
    name = "gguf"

    def applies(self, fmt: str, path: str) -> bool:
        return fmt == "gguf"

    def scan(self, src: Source, item: ScanItem, ctx: ScanContext, out: FileScan) -> None:
        findings, templates = validate(src)
        out.findings.extend(findings)
        for key, template in sorted(templates.items()):
            out.findings.extend(check_template(template, where=key))
        template_facts(out, templates)
