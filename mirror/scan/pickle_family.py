"""The pickle family: raw pickles, legacy ``torch.save`` files and numpy ``.npy``, checked against the allowlist.

Every pickle stream in a file is walked (``pickles.walk_pickle``), never loaded:

* a raw pickle is one stream that must end exactly at the file's end: anything after its STOP is a
  stacked pickle (``pickle.stacked``, walked too so its globals are named) or junk
  (``pickle.trailing-data``); ``pickle.load`` called twice would run a second stream;
* a legacy ``torch.save`` file is exactly five consecutive pickles (magic number, protocol version,
  sys info, the object, the storage keys) followed by raw storage bytes that torch never unpickles;
* a ``.npy`` whose dtype holds objects is a header followed by a pickle (``numpy.load(allow_pickle=True)``).

joblib files are pickles with ``joblib.numpy_pickle.NumpyArrayWrapper`` globals and raw array bytes
spliced into the opcode stream: they block (the global is not allowlisted; the stream does not parse).
"""

from __future__ import annotations

import ast
import struct
from typing import Any, BinaryIO

from .allowlist import ALLOWLIST_VERSION, is_allowed
from .base import FileScan, ScanContext, ScanFinding, ScanItem, Source
from .pickles import PickleParseError, PickleReader, walk_pickle

LEGACY_TORCH_PICKLES = 5
MAX_STACKED = 16  # trailing pickles walked (to name their globals) before giving up
NPY_HEADER_MAX = 1 << 20


def scan_stream(f: BinaryIO, fmt: str, out: FileScan, member: str | None = None) -> None:
    """Walk every pickle of a ``pickle`` / ``torch-legacy`` / ``numpy`` stream into ``out``."""
    r = PickleReader(f)
    where = {"member": member} if member else {}
    try:
        if fmt == "numpy" and not _npy_has_pickle(r, out, where):
            return
        count = LEGACY_TORCH_PICKLES if fmt == "torch-legacy" else 1
        for _ in range(count):
            _walk_into(r, out, where)
        if fmt != "torch-legacy" and not r.at_eof():
            _trailing(r, out, where)
    except PickleParseError as e:
        _record(e.globals, out, where)
        out.findings.append(ScanFinding(e.rule, f"{_in(member)}{e}", data={**where, "offset": e.offset}))


def _walk_into(r: PickleReader, out: FileScan, where: dict[str, Any]) -> None:
    out.allowlist_version = ALLOWLIST_VERSION
    _record(walk_pickle(r).globals, out, where)


def _record(found: list[tuple[str, str]], out: FileScan, where: dict[str, Any]) -> None:
    """Add globals to ``out.globals`` and a ``pickle.global`` finding for each one not allowlisted."""
    for module, name in found:
        dotted = f"{module}.{name}"
        if dotted not in out.globals:
            out.globals.append(dotted)
        if not is_allowed(module, name):
            out.findings.append(ScanFinding(
                "pickle.global", f"{_in(where.get('member'))}pickle imports {dotted}, "
                                 f"which is not on allowlist {ALLOWLIST_VERSION}",
                data={**where, "global": dotted}))
    out.globals.sort()


def _trailing(r: PickleReader, out: FileScan, where: dict[str, Any]) -> None:
    """Bytes after the STOP: more pickles (walked, up to ``MAX_STACKED``) or junk; either blocks."""
    start = r.offset
    r.fill(2)
    if r.buf[r.pos:r.pos + 1] != b"\x80":
        out.findings.append(ScanFinding("pickle.trailing-data", f"{_in(where.get('member'))}bytes after the "
                                        f"pickle's STOP at byte {start}", data={**where, "offset": start}))
        return
    out.findings.append(ScanFinding("pickle.stacked", f"{_in(where.get('member'))}a second pickle starts at "
                                    f"byte {start}", data={**where, "offset": start}))
    for _ in range(MAX_STACKED):
        _walk_into(r, out, where)
        if r.at_eof():
            return


def _npy_has_pickle(r: PickleReader, out: FileScan, where: dict[str, Any]) -> bool:
    """Parse the .npy header (a Python literal, via ``ast.literal_eval``); True if a pickle follows it."""
    r.fill(12)
    head = r.buf[r.pos:r.pos + 12]
    version = head[6:8]
    if head[:6] != b"\x93NUMPY" or version not in (b"\x01\x00", b"\x02\x00", b"\x03\x00"):
        raise PickleParseError("not a .npy header (bad magic or version)", r.offset, "numpy.header")
    wide = version != b"\x01\x00"
    hlen = struct.unpack_from("<I" if wide else "<H", head, 8)[0]
    start = 12 if wide else 10
    if hlen > NPY_HEADER_MAX:
        raise PickleParseError(f".npy header of {hlen} bytes", r.offset, "numpy.header")
    r.fill(start + hlen)
    raw = r.buf[r.pos + start:r.pos + start + hlen]
    if len(raw) != hlen:
        raise PickleParseError(".npy header is truncated", r.offset, "numpy.header")
    try:
        header = ast.literal_eval(raw.decode("utf-8" if version == b"\x03\x00" else "latin1"))
    except (ValueError, SyntaxError, MemoryError, RecursionError, UnicodeDecodeError):
        raise PickleParseError(".npy header is not a Python literal", r.offset, "numpy.header") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise PickleParseError(".npy header must have exactly descr, fortran_order, shape", r.offset,
                               "numpy.header")
    r.pos += start + hlen
    has_object = _has_object(header["descr"])
    out.facts["numpy_object"] = has_object
    return has_object


def _has_object(descr: Any) -> bool:
    """Whether a numpy dtype description holds Python objects anywhere (fields included)."""
    if isinstance(descr, str):
        return descr.lstrip("<>|=").startswith("O")
    if isinstance(descr, list):
        return any(isinstance(f, tuple) and len(f) >= 2 and _has_object(f[1]) for f in descr)
    return True  # anything else is not a dtype numpy writes: assume the worst


def _in(member: str | None) -> str:
    return f"{member}: " if member else ""


class PickleScanner:
    """Raw pickles, legacy torch files and .npy (zips, including torch's, are ``archives.ArchiveScanner``'s)."""

    name = "pickle"

    def applies(self, fmt: str, path: str) -> bool:
        return fmt in ("pickle", "torch-legacy", "numpy")

    def scan(self, src: Source, item: ScanItem, ctx: ScanContext, out: FileScan) -> None:
        with src.stream() as f:
            scan_stream(f, out.format, out)
