"""A minimal protobuf wire-format reader over a ``Source``: fields by number, payloads by (offset, length).

Why not ``onnx.load``: it reads the whole file (up to 2 GB of weights) into memory, which the scan
child's address-space limit must not have to allow, and it pulls protobuf and onnx into the child.
Here a message is walked with bounded ``read_at`` calls; ``raw_data`` is never read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .base import Source

VARINT, I64, LEN, I32 = 0, 1, 2, 5
MAX_FIELDS = 10_000_000  # per message; bounds the walk of a hostile file
# ModelProto's fields and their wire types (onnx.proto; ``tests/scan`` checks them against onnx).
MODEL_FIELDS = {1: VARINT, 2: LEN, 3: LEN, 4: LEN, 5: VARINT, 6: LEN, 7: LEN, 8: LEN, 14: LEN, 20: LEN, 25: LEN,
                26: LEN}


class WireError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


@dataclass(frozen=True)
class Field:
    number: int
    wire: int
    value: int  # the varint / fixed value; for LEN, the payload's offset
    length: int = 0  # LEN payload length


def read_varint(src: Source, offset: int, end: int) -> tuple[int, int]:
    """(value, offset after it); at most 10 bytes, never past ``end``."""
    data = src.read_at(offset, min(10, end - offset))
    value = shift = 0
    for i, b in enumerate(data):
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, offset + i + 1
        shift += 7
    raise WireError(f"bad varint at byte {offset}")


def fields(src: Source, start: int, end: int) -> Iterator[Field]:
    """The fields of the message in ``[start, end)``; raises ``WireError`` if it does not end exactly at ``end``."""
    pos, count = start, 0
    while pos < end:
        count += 1
        if count > MAX_FIELDS:
            raise WireError("too many fields")
        tag, pos = read_varint(src, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {pos}")
        if wire == VARINT:
            value, pos = read_varint(src, pos, end)
            yield Field(number, wire, value)
        elif wire == LEN:
            length, pos = read_varint(src, pos, end)
            if pos + length > end:
                raise WireError(f"field {number} runs past its message at byte {pos}")
            yield Field(number, wire, pos, length)
            pos += length
        elif wire in (I64, I32):
            width = 8 if wire == I64 else 4
            if pos + width > end:
                raise WireError(f"field {number} runs past its message at byte {pos}")
            yield Field(number, wire, int.from_bytes(src.read_at(pos, width), "little"))
            pos += width
        else:
            raise WireError(f"unsupported wire type {wire} at byte {pos}")
    if pos != end:
        raise WireError("message overruns its end")


def text(src: Source, f: Field, limit: int = 1 << 16) -> str:
    """A LEN field as UTF-8 (strings longer than ``limit`` raise: no ONNX name needs that)."""
    if f.wire != LEN or f.length > limit:
        raise WireError(f"field {f.number} is not a short string")
    try:
        return src.read_at(f.value, f.length).decode("utf-8")
    except UnicodeDecodeError:
        raise WireError(f"field {f.number} is not UTF-8") from None


def looks_like_onnx(src: Source, max_fields: int = 100_000) -> bool:
    """The whole file parses as a ModelProto's top level, and has a graph or an IR version."""
    if src.size < 2:
        return False
    seen = set()
    try:
        for n, f in enumerate(fields(src, 0, src.size)):
            if n >= max_fields or MODEL_FIELDS.get(f.number) != f.wire:
                return False
            seen.add(f.number)
    except WireError:
        return False
    return bool(seen & {1, 7})
