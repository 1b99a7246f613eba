"""Xet hashes (Xet Protocol Specification 1.1.0, "Hashing"): chunk, xorb, file and term-verification hashes.

A hash is 32 raw bytes. Its string form (API paths, JSON, storage keys) is *not* the plain hex of
those bytes: each 8-byte quarter is read as a little-endian u64 and printed as 16 hex digits.
Everything in hubgate passes hashes around as those 64-character strings; ``raw``/``text`` convert.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

from blake3 import blake3

DATA_KEY = bytes([102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28, 157, 228, 33, 16,
                  155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41])
INTERNAL_NODE_KEY = bytes([1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230, 93, 221, 83,
                           111, 55, 199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63])
VERIFICATION_KEY = bytes([127, 24, 87, 214, 206, 86, 237, 102, 18, 127, 249, 19, 231, 165, 195, 243, 164, 205, 38,
                          213, 181, 219, 73, 230, 65, 36, 152, 127, 40, 251, 148, 195])
ZERO_KEY = bytes(32)
_MEAN_BRANCHING = 4
_MAX_GROUP = 2 * _MEAN_BRANCHING + 1
_HASH_TEXT = re.compile(r"^[0-9a-f]{64}$")


def text(raw_hash: bytes) -> str:
    """The protocol's string form of a raw 32-byte hash."""
    a, b, c, d = struct.unpack("<4Q", raw_hash)
    return f"{a:016x}{b:016x}{c:016x}{d:016x}"


def raw(hash_text: str) -> bytes:
    """The raw 32 bytes of a hash's string form. Raises ValueError for anything but 64 lowercase hex."""
    if not _HASH_TEXT.match(hash_text):
        raise ValueError(f"not a Xet hash: {hash_text[:80]!r}")
    return struct.pack("<4Q", *(int(hash_text[i:i + 16], 16) for i in range(0, 64, 16)))


def is_hash(value: str) -> bool:
    return bool(_HASH_TEXT.match(value))


def chunk_hash(data: bytes | memoryview) -> bytes:
    """Raw hash of one chunk's (uncompressed) bytes."""
    return blake3(data, key=DATA_KEY).digest()


def _node(entries: Sequence[tuple[bytes, int]]) -> tuple[bytes, int]:
    buf = "".join(f"{text(h)} : {n}\n" for h, n in entries).encode()
    return blake3(buf, key=INTERNAL_NODE_KEY).digest(), sum(n for _, n in entries)


def _next_cut(entries: Sequence[tuple[bytes, int]], start: int) -> int:
    remaining = len(entries) - start
    if remaining <= 2:
        return len(entries)
    end = min(_MAX_GROUP, remaining)
    for i in range(2, end):
        # ``hash % 4`` in xet-core is taken on the hash's last u64 (little-endian)
        if int.from_bytes(entries[start + i][0][24:32], "little") % _MEAN_BRANCHING == 0:
            return start + i + 1
    return start + end


def merkle_root(entries: Sequence[tuple[bytes, int]]) -> bytes:
    """The aggregated node hash over (raw chunk hash, unpacked size) pairs; 32 zero bytes when empty."""
    if not entries:
        return bytes(32)
    level = list(entries)
    while len(level) > 1:
        merged, i = [], 0
        while i < len(level):
            cut = _next_cut(level, i)
            merged.append(_node(level[i:cut]))
            i = cut
        level = merged
    return level[0][0]


def xorb_hash(entries: Sequence[tuple[bytes, int]]) -> bytes:
    return merkle_root(entries)


def file_hash(entries: Sequence[tuple[bytes, int]]) -> bytes:
    """The file hash: the merkle root keyed once more with 32 zero bytes (32 zero bytes for an empty file)."""
    if not entries:
        return bytes(32)
    return blake3(merkle_root(entries), key=ZERO_KEY).digest()


def range_hash(chunk_hashes: Sequence[bytes]) -> bytes:
    """The term verification hash of a run of raw chunk hashes."""
    return blake3(b"".join(chunk_hashes), key=VERIFICATION_KEY).digest()


DEDUP_MODULUS = 1024


def is_dedup_eligible(raw_chunk_hash: bytes) -> bool:
    """The spec's global-dedup eligibility: the hash's last 8 bytes, little-endian, divisible by 1024."""
    return int.from_bytes(raw_chunk_hash[24:32], "little") % DEDUP_MODULUS == 0
