"""Xorb and shard binary formats (Xet Protocol Specification 1.1.0, "Xorb Format", "MDB Shard File Format").

Parsing here is strict and bounded: every length is checked against the bytes actually present, so a
malformed or hostile object raises XetFormatError instead of allocating or reading past its end.
``verify_xorb`` decompresses every chunk and checks its hash, then the xorb hash over all of them:
a xorb that passes holds exactly the bytes its hash names.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

import lz4.frame

from mirror.errors import StorageError
from mirror.xet import hashing

MAX_XORB_BYTES = 64 * 1024 * 1024 + 1024 * 1024  # 64 MiB of chunk data, plus headers and the footer
MAX_CHUNK_BYTES = 128 * 1024
CHUNK_HEADER = struct.Struct("<B3sB3s")
_XORB_IDENT = b"XETBLOB"
_HASHES_IDENT = b"XBLBHSH"
_BOUNDARIES_IDENT = b"XBLBBND"
_SHARD_TAG = b"HFRepoMetaData\x00" + bytes([85, 105, 103, 69, 106, 123, 129, 87, 131, 165, 189, 217, 92, 205,
                                               209, 74, 169])  # MDB_SHARD_HEADER_TAG
_SHARD_VERSION = 2
_BOOKEND = b"\xff" * 32
_FLAG_VERIFICATION = 1 << 31
_FLAG_METADATA_EXT = 1 << 30
_ENTRY = 48
_SHARD_FOOTER_SIZE = 200


class XetFormatError(StorageError):
    """A xorb or shard that is malformed, or whose hashes do not match its content."""


# -- xorbs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class XorbFooter:
    """What a xorb's footer says: its hash, and per chunk its hash, end offset in the xorb and unpacked end."""

    xorb_hash: str
    chunk_hashes: tuple[bytes, ...]
    chunk_ends: tuple[int, ...]  # byte offset in the serialized xorb where chunk i (header included) ends
    unpacked_ends: tuple[int, ...]  # cumulative unpacked length after chunk i
    footer_size: int  # footer bytes, the trailing 4-byte length included

    @property
    def num_chunks(self) -> int:
        return len(self.chunk_hashes)

    def chunk_start(self, i: int) -> int:
        return self.chunk_ends[i - 1] if i else 0

    def unpacked_size(self, i: int) -> int:
        return self.unpacked_ends[i] - (self.unpacked_ends[i - 1] if i else 0)

    def byte_range(self, start: int, end: int) -> tuple[int, int]:
        """[first, last] (inclusive) bytes of chunks [start, end) in the serialized xorb."""
        return self.chunk_start(start), self.chunk_ends[end - 1] - 1

    def unpacked_range_size(self, start: int, end: int) -> int:
        return self.unpacked_ends[end - 1] - (self.unpacked_ends[start - 1] if start else 0)


def _u32s(data: bytes, offset: int, n: int) -> tuple[int, ...]:
    return struct.unpack_from(f"<{n}I", data, offset)


def parse_xorb_footer(tail: bytes, xorb_size: int) -> XorbFooter:
    """Parse the footer from the last ``len(tail)`` bytes of a ``xorb_size``-byte xorb (the whole footer must
    be in ``tail``: see ``footer_length``). Raises XetFormatError."""
    if len(tail) < 4:
        raise XetFormatError("xorb too short for a footer")
    info_len = struct.unpack_from("<I", tail, len(tail) - 4)[0]
    start = len(tail) - 4 - info_len
    if info_len < 8 or start < 0:
        raise XetFormatError("xorb footer length is out of bounds")
    info = tail[start:len(tail) - 4]
    if info[:7] != _XORB_IDENT:
        raise XetFormatError("xorb footer has no XETBLOB ident")
    version = info[7]
    footer_size = info_len + 4
    if version == 1:
        return _parse_footer_v1(info, footer_size, xorb_size)
    if version == 0:
        return _parse_footer_v0(info, footer_size, xorb_size)
    raise XetFormatError(f"xorb footer version {version} is unknown")


def footer_length(last4: bytes) -> int:
    """Bytes of footer (including the trailing length) given a xorb's last 4 bytes."""
    return struct.unpack("<I", last4)[0] + 4


def _parse_footer_v1(info: bytes, footer_size: int, xorb_size: int) -> XorbFooter:
    if len(info) < 40 + 8 + 4 + 8 + 4 + 12 + 16:
        raise XetFormatError("xorb footer too short")
    xorb_hash = hashing.text(info[8:40])
    n = struct.unpack_from("<I", info, len(info) - 28)[0]
    expect = 40 + 12 + 32 * n + 12 + 8 * n + 12 + 16
    if expect != len(info):
        raise XetFormatError(f"xorb footer is {len(info)} bytes; {n} chunks need {expect}")
    if info[40:47] != _HASHES_IDENT or struct.unpack_from("<I", info, 48)[0] != n:
        raise XetFormatError("xorb footer hash section is malformed")
    hashes = tuple(info[52 + 32 * i:84 + 32 * i] for i in range(n))
    b = 52 + 32 * n
    if info[b:b + 7] != _BOUNDARIES_IDENT or struct.unpack_from("<I", info, b + 8)[0] != n:
        raise XetFormatError("xorb footer boundary section is malformed")
    ends = _u32s(info, b + 12, n)
    unpacked = _u32s(info, b + 12 + 4 * n, n)
    return _checked_footer(xorb_hash, hashes, ends, unpacked, footer_size, xorb_size)


def _parse_footer_v0(info: bytes, footer_size: int, xorb_size: int) -> XorbFooter:
    if len(info) < 44 + 16:
        raise XetFormatError("xorb footer too short")
    xorb_hash = hashing.text(info[8:40])
    n = struct.unpack_from("<I", info, 40)[0]
    if 44 + 36 * n + 16 != len(info):
        raise XetFormatError("xorb footer (v0) length does not match its chunk count")
    ends = _u32s(info, 44, n)
    hashes = tuple(info[44 + 4 * n + 32 * i:44 + 4 * n + 32 * (i + 1)] for i in range(n))
    return _checked_footer(xorb_hash, hashes, ends, (), footer_size, xorb_size)


def _checked_footer(xorb_hash: str, hashes: tuple[bytes, ...], ends: Sequence[int], unpacked: Sequence[int],
                    footer_size: int, xorb_size: int) -> XorbFooter:
    n = len(hashes)
    if n == 0:
        raise XetFormatError("xorb has no chunks")
    if any(b <= a for a, b in zip((0, *ends), ends)) or ends[-1] + footer_size != xorb_size:
        raise XetFormatError("xorb chunk boundaries are not increasing or do not end at the footer")
    if unpacked and any(b <= a for a, b in zip((0, *unpacked), unpacked)):
        raise XetFormatError("xorb unpacked offsets are not increasing")
    return XorbFooter(xorb_hash, hashes, tuple(ends), tuple(unpacked), footer_size)


def decode_chunk(data: bytes | memoryview, offset: int, end: int) -> tuple[bytes, int]:
    """(uncompressed bytes, offset of the next chunk) of the chunk serialized at ``data[offset:end]``."""
    if offset + 8 > end:
        raise XetFormatError("truncated chunk header")
    version, clen_b, scheme, ulen_b = CHUNK_HEADER.unpack_from(data, offset)
    clen, ulen = int.from_bytes(clen_b, "little"), int.from_bytes(ulen_b, "little")
    body_end = offset + 8 + clen
    if version != 0 or body_end > end or ulen > MAX_CHUNK_BYTES or clen > 2 * MAX_CHUNK_BYTES:
        raise XetFormatError("chunk header is malformed")
    body = data[offset + 8:body_end]
    try:
        if scheme == 0:
            out = bytes(body)
        elif scheme == 1:
            out = lz4.frame.decompress(bytes(body))
        elif scheme == 2:
            out = _bg4_ungroup(lz4.frame.decompress(bytes(body)))
        else:
            raise XetFormatError(f"chunk compression scheme {scheme} is unknown")
    except RuntimeError as exc:  # lz4 reports corrupt frames so
        raise XetFormatError(f"chunk does not decompress: {exc}") from exc
    if len(out) != ulen:
        raise XetFormatError(f"chunk decompresses to {len(out)} bytes, its header says {ulen}")
    return out, body_end


def _bg4_ungroup(grouped: bytes) -> bytes:
    """Undo byte grouping: group i holds bytes i, i+4, i+8, … of the chunk (the first groups one longer)."""
    n = len(grouped)
    out = bytearray(n)
    pos = 0
    for i in range(4):
        size = (n - i + 3) // 4
        out[i::4] = grouped[pos:pos + size]
        pos += size
    return bytes(out)


def iter_chunks(data: bytes | memoryview, footer: XorbFooter, start: int = 0, end: int | None = None,
                base: int = 0):  # type: ignore[no-untyped-def]
    """Yield the uncompressed bytes of chunks [start, end) from ``data``, which holds the xorb from byte
    ``base`` on. Raises XetFormatError when a chunk does not end where the footer says."""
    end = footer.num_chunks if end is None else end
    for i in range(start, end):
        chunk, nxt = decode_chunk(data, footer.chunk_start(i) - base, footer.chunk_ends[i] - base)
        if nxt != footer.chunk_ends[i] - base:
            raise XetFormatError(f"chunk {i} ends at {nxt + base}, the footer says {footer.chunk_ends[i]}")
        yield chunk


def verify_xorb(data: bytes | memoryview, expected_hash: str | None = None) -> XorbFooter:
    """Check a whole stored xorb (chunks, then its footer): every chunk decompresses to the size and hash its
    footer lists, and the xorb hash (a merkle tree over those) is the footer's and ``expected_hash``.
    Returns the footer. Raises XetFormatError."""
    if len(data) > MAX_XORB_BYTES:
        raise XetFormatError(f"xorb is {len(data)} bytes, over the 64 MiB limit")
    footer = parse_xorb_footer(bytes(data[-min(len(data), 1 << 20):]), len(data))
    if footer.footer_size > len(data):
        raise XetFormatError("xorb footer is longer than the xorb")
    entries = []
    unpacked_end = 0
    for i, chunk in enumerate(iter_chunks(data, footer)):
        h = hashing.chunk_hash(chunk)
        if h != footer.chunk_hashes[i]:
            raise XetFormatError(f"chunk {i} does not match its hash")
        unpacked_end += len(chunk)
        if footer.unpacked_ends and footer.unpacked_ends[i] != unpacked_end:
            raise XetFormatError(f"chunk {i} unpacked offset disagrees with the footer")
        entries.append((h, len(chunk)))
    if hashing.text(hashing.xorb_hash(entries)) != footer.xorb_hash:
        raise XetFormatError("xorb hash does not match its chunks")
    if expected_hash is not None and footer.xorb_hash != expected_hash:
        raise XetFormatError(f"xorb is {footer.xorb_hash}, not {expected_hash}")
    if not footer.unpacked_ends:  # v0 footers carry no unpacked offsets: fill them in from the chunks
        ends, total = [], 0
        for _, n in entries:
            total += n
            ends.append(total)
        footer = XorbFooter(footer.xorb_hash, footer.chunk_hashes, footer.chunk_ends, tuple(ends), footer.footer_size)
    return footer


def verify_upload(data: bytes, expected_hash: str) -> tuple[XorbFooter, bytes]:
    """Check a xorb as a client uploads it and return (its footer, the bytes to store).

    ``hf_xet`` uploads the chunk sequence alone; a complete xorb (chunks and footer) is accepted too.
    Every chunk is decompressed and hashed; the merkle hash over them must be ``expected_hash``. The
    stored form always ends with a footer we wrote (format v1), so readers find chunk boundaries
    with one ranged read of the tail. Raises XetFormatError."""
    if len(data) > MAX_XORB_BYTES:
        raise XetFormatError(f"xorb is {len(data)} bytes, over the 64 MiB limit")
    pos, ends, unpacked, entries, total = 0, [], [], [], 0
    while pos < len(data) and data[pos] == 0:  # a chunk header starts with version 0; a footer with "XETBLOB"
        chunk, pos = decode_chunk(data, pos, len(data))
        h = hashing.chunk_hash(chunk)
        total += len(chunk)
        entries.append((h, len(chunk)))
        ends.append(pos)
        unpacked.append(total)
    if not entries:
        raise XetFormatError("xorb has no chunks")
    if pos != len(data):
        given = parse_xorb_footer(bytes(data[pos:]), len(data))
        if given.chunk_ends != tuple(ends) or given.chunk_hashes != tuple(h for h, _ in entries):
            raise XetFormatError("xorb footer disagrees with its chunks")
    actual = hashing.text(hashing.xorb_hash(entries))
    if actual != expected_hash:
        raise XetFormatError(f"xorb chunks hash to {actual}, not {expected_hash}")
    tail = serialize_footer(actual, [h for h, _ in entries], ends, unpacked)
    footer = XorbFooter(actual, tuple(h for h, _ in entries), tuple(ends), tuple(unpacked), len(tail))
    return footer, bytes(data[:pos]) + tail


def serialize_footer(xorb_hash: str, chunk_hashes: Sequence[bytes], ends: Sequence[int],
                     unpacked: Sequence[int]) -> bytes:
    """A v1 ``XorbObjectInfo`` footer and its trailing length."""
    n = len(chunk_hashes)
    boundary_from_end = 7 + 1 + 4 + 8 * n + 4 * 3 + 16
    hashes_from_end = 7 + 1 + 4 + 32 * n + boundary_from_end
    info = b"".join([
        _XORB_IDENT, b"\x01", hashing.raw(xorb_hash),
        _HASHES_IDENT, b"\x00", struct.pack("<I", n), *chunk_hashes,
        _BOUNDARIES_IDENT, b"\x01", struct.pack(f"<I{n}I{n}I", n, *ends, *unpacked),
        struct.pack("<III", n, hashes_from_end, boundary_from_end), bytes(16),
    ])
    return info + struct.pack("<I", len(info))


# -- shards ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    xorb_hash: str
    chunk_start: int
    chunk_end: int  # exclusive
    unpacked_size: int
    range_hash: bytes | None  # the term verification hash, when the shard carries one


@dataclass(frozen=True)
class FileInfo:
    file_hash: str
    terms: tuple[Term, ...]
    sha256: str | None  # from the metadata extension (hex), when present

    @property
    def size(self) -> int:
        return sum(t.unpacked_size for t in self.terms)


@dataclass(frozen=True)
class XorbInfo:
    """A CAS info block: a xorb and its chunks, as listed in a shard (and answered to dedup queries)."""

    xorb_hash: str
    chunks: tuple[tuple[bytes, int, int], ...]  # (raw chunk hash, byte start in the xorb, unpacked size)
    unpacked_total: int
    size: int  # serialized xorb bytes


@dataclass(frozen=True)
class Shard:
    files: tuple[FileInfo, ...]
    xorbs: tuple[XorbInfo, ...]


def parse_shard(data: bytes) -> Shard:
    """Parse a shard as uploaded (footer omitted) or stored with its footer. Raises XetFormatError."""
    if len(data) < 48 or data[:32] != _SHARD_TAG:
        raise XetFormatError("not a shard: bad header tag")
    version, _footer_size = struct.unpack_from("<QQ", data, 32)
    if version != _SHARD_VERSION:
        raise XetFormatError(f"shard header version {version} is unknown")
    pos = 48
    files: list[FileInfo] = []
    while True:
        _need(data, pos, _ENTRY)
        if data[pos:pos + 32] == _BOOKEND:
            pos += _ENTRY
            break
        file_hash = hashing.text(data[pos:pos + 32])
        flags, n = struct.unpack_from("<II", data, pos + 32)
        pos += _ENTRY
        _need(data, pos, _ENTRY * n * (2 if flags & _FLAG_VERIFICATION else 1)
              + (_ENTRY if flags & _FLAG_METADATA_EXT else 0))
        raw_terms = []
        for _ in range(n):
            xorb, _cas_flags, size, start, end = struct.unpack_from("<32sIIII", data, pos)
            if end <= start:
                raise XetFormatError(f"file {file_hash}: empty or reversed chunk range")
            raw_terms.append((hashing.text(xorb), start, end, size))
            pos += _ENTRY
        checks: list[bytes | None] = [None] * n
        if flags & _FLAG_VERIFICATION:
            checks = [data[pos + _ENTRY * i:pos + _ENTRY * i + 32] for i in range(n)]
            pos += _ENTRY * n
        sha256 = None
        if flags & _FLAG_METADATA_EXT:
            sha256 = hashing.text(data[pos:pos + 32])  # stored like a Xet hash: u64-LE quarters
            pos += _ENTRY
        files.append(FileInfo(file_hash, tuple(Term(x, s, e, u, c) for (x, s, e, u), c in zip(raw_terms, checks)),
                              sha256))
    xorbs: list[XorbInfo] = []
    while True:
        _need(data, pos, _ENTRY)
        if data[pos:pos + 32] == _BOOKEND:
            break
        xorb = hashing.text(data[pos:pos + 32])
        _flags, n, unpacked, on_disk = struct.unpack_from("<IIII", data, pos + 32)
        pos += _ENTRY
        _need(data, pos, _ENTRY * n)
        chunks = tuple((data[pos + _ENTRY * i:pos + _ENTRY * i + 32],
                        *struct.unpack_from("<II", data, pos + _ENTRY * i + 32)) for i in range(n))
        pos += _ENTRY * n
        xorbs.append(XorbInfo(xorb, chunks, unpacked, on_disk))  # type: ignore[arg-type]
    return Shard(tuple(files), tuple(xorbs))


def _need(data: bytes, pos: int, n: int) -> None:
    if pos + n > len(data):
        raise XetFormatError("shard is truncated")


def dedup_shard(xorbs: Sequence[XorbInfo], *, now: float | None = None, valid_seconds: int = 7 * 24 * 3600) -> bytes:
    """The answer to a global dedup query: a complete shard (hf_xet stores it in its shard cache as a file,
    so it needs the footer and the lookup tables) with no files and these xorbs' CAS info blocks. Chunk
    hashes are given in the clear (no HMAC key): only this instance's own uploader asks."""
    created = int(time.time() if now is None else now)
    cas = [_BOOKEND + bytes(16)]  # the (empty) file info section's bookend comes first
    xorb_lookup: list[tuple[int, int]] = []
    chunk_lookup: list[tuple[int, int, int]] = []
    index = 0
    for x in sorted(xorbs, key=lambda x: hashing.raw(x.xorb_hash)):
        raw = hashing.raw(x.xorb_hash)
        xorb_lookup.append((int.from_bytes(raw[:8], "little"), index))
        cas.append(raw + struct.pack("<IIII", 0, len(x.chunks), x.unpacked_total, x.size))
        for i, (h, start, size) in enumerate(x.chunks):
            cas.append(h + struct.pack("<II", start, size) + bytes(8))
            chunk_lookup.append((int.from_bytes(h[:8], "little"), index, i))
        index += 1 + len(x.chunks)
    cas.append(_BOOKEND + bytes(16))
    body = b"".join(cas)
    file_info_offset = 48
    xorb_info_offset = 48 + _ENTRY
    pos = 48 + len(body)
    lookups = b"".join(struct.pack("<QI", k, v) for k, v in xorb_lookup)
    xorb_lookup_offset = pos
    pos += len(lookups)
    chunk_lookup.sort(key=lambda e: e[0])
    chunks = b"".join(struct.pack("<QII", k, a, b) for k, a, b in chunk_lookup)
    chunk_lookup_offset = pos
    pos += len(chunks)
    stored = sum(x.unpacked_total for x in xorbs)
    footer = struct.pack("<9Q", 1, file_info_offset, xorb_info_offset, xorb_lookup_offset, 0, xorb_lookup_offset,
                         len(xorb_lookup), chunk_lookup_offset, len(chunk_lookup))
    footer += bytes(32) + struct.pack("<QQ", created, created + valid_seconds) + bytes(48)
    footer += struct.pack("<QQQQ", sum(x.size for x in xorbs), stored, stored, pos)
    assert len(footer) == _SHARD_FOOTER_SIZE
    header = _SHARD_TAG + struct.pack("<QQ", _SHARD_VERSION, _SHARD_FOOTER_SIZE)
    return header + body + lookups + chunks + footer


def xorb_info(footer: XorbFooter, size: int) -> XorbInfo:
    chunks = tuple((footer.chunk_hashes[i], footer.chunk_start(i), footer.unpacked_size(i))
                   for i in range(footer.num_chunks))
    return XorbInfo(footer.xorb_hash, chunks, footer.unpacked_ends[-1], size)
