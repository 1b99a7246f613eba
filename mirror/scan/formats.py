"""Format by content, never by name: sniff a file's bytes, then say whether its name agrees.

Loaders pick their parser from bytes (``torch.load`` unpickles anything that is not a zip), so a
pickle named ``config.json`` or ``model.safetensors`` is as dangerous as one named ``model.bin``.
Every file is classified from its bytes; a name whose extension promises another format is a
blocking ``format.mismatch``. Names without an extension promise nothing, but detection still
decides which scanners run (a pickle named ``weights`` is walked as a pickle).
"""

from __future__ import annotations

import codecs
import io
import pickle
import pickletools
import struct
import zipfile
from typing import Any

from .base import ScanFinding, Source
from .protowire import looks_like_onnx

PICKLE_FAMILY = frozenset({"pickle", "torch-zip", "torch-legacy"})
ARCHIVES = frozenset({"zip", "torch-zip", "npz", "tar", "gzip", "bz2", "xz", "zstd", "7z"})
TEXT_PREFIX = 1 << 16
PICKLE_SNIFF = 1 << 20  # protocol 0/1 pickles have no header: parse this much to decide

# torch.save's legacy format starts with this pickle (the magic number as a protocol-2 LONG1).
TORCH_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)

_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x93NUMPY", "numpy"),
    (b"GGUF", "gguf"),
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"PAR1", "parquet"),
)
_PICKLE_EXT = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".dill", ".npy", ".npz"})
_TEXT = frozenset({"text", "empty"})
# What each extension may hold. Extensions not listed promise nothing (beyond the pickle rule below).
_EXPECT: dict[str, frozenset[str]] = {
    ".safetensors": frozenset({"safetensors"}),
    ".gguf": frozenset({"gguf"}),
    ".onnx": frozenset({"onnx"}),
    ".h5": frozenset({"hdf5"}), ".hdf5": frozenset({"hdf5"}),
    ".msgpack": frozenset({"binary", "empty"}),
    ".parquet": frozenset({"parquet"}),
    ".npy": frozenset({"numpy"}),
    ".npz": frozenset({"npz", "empty"}),
    ".zip": frozenset({"zip", "npz", "torch-zip"}),
    ".tar": frozenset({"tar"}), ".gz": frozenset({"gzip"}), ".tgz": frozenset({"gzip"}),
    ".bz2": frozenset({"bz2"}), ".xz": frozenset({"xz"}), ".zst": frozenset({"zstd"}), ".7z": frozenset({"7z"}),
    ".bin": frozenset({"pickle", "torch-zip", "torch-legacy", "binary", "safetensors", "gguf", "numpy", "empty"}),
    **{ext: frozenset({"pickle", "torch-zip", "torch-legacy", "numpy", "zip", "empty"})
       for ext in (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib", ".dill")},
    **dict.fromkeys((".json", ".jsonl", ".txt", ".md", ".csv", ".tsv", ".yaml", ".yml", ".jinja",
                              ".py", ".cfg", ".ini", ".toml", ".html", ".xml", ".tiktoken", ".vocab"), _TEXT),
}


def extension(path: str) -> str:
    """The last suffix of the file name, lower-cased ('' for none; dot-files have none)."""
    name = path.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def detect(src: Source) -> str:
    """The format of the file's bytes (see ``FileScan.format``); ``binary`` when nothing matches."""
    if src.size == 0:
        return "empty"
    head = src.read_at(0, 4096)
    fmt = sniff_magic(head)
    if fmt == "zip":
        return _zip_kind(src)
    if fmt:
        return fmt
    if _is_safetensors(head, src.size):
        return "safetensors"
    if _is_prefixed_zip(src):
        return _zip_kind(src)
    if looks_like_old_pickle(src.read_at(0, PICKLE_SNIFF), whole=src.size <= PICKLE_SNIFF):
        return "pickle"
    if _is_text(src.read_at(0, TEXT_PREFIX), whole=src.size <= TEXT_PREFIX):
        return "text"
    if looks_like_onnx(src):
        return "onnx"
    return "binary"


def sniff_magic(head: bytes) -> str | None:
    """Formats recognisable from their first bytes alone (zip, pickles, numpy, GGUF, HDF5, archives, ...)."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(TORCH_LEGACY_MAGIC):
        return "torch-legacy"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    for magic, fmt in _MAGICS:
        if head.startswith(magic):
            return fmt
    if head.startswith(b"BZh") and head[4:10] == b"1AY&SY":
        return "bz2"
    if head[257:262] == b"ustar":
        return "tar"
    return None


def sniff_member(head: bytes, whole: bool) -> str:
    """An archive member's format from its first ``PICKLE_SNIFF`` bytes: a ``sniff_magic`` format,
    ``pickle`` (protocol 0/1 heuristic included), or ``data``."""
    fmt = sniff_magic(head)
    if fmt:
        return fmt
    return "pickle" if looks_like_old_pickle(head, whole) else "data"


# A mismatch blocks when the bytes are of a family that can carry code or hide files (a pickle named
# config.json, a zip named notes.txt), or when the name promises a format whose loaders parse it
# natively and the bytes are not that format (a ".safetensors" a loader would misread). Any other
# mismatch (text in a ".bin", random bytes named ".parquet") cannot run anything: it is a warning.
_DANGEROUS = PICKLE_FAMILY | ARCHIVES | frozenset({"numpy", "hdf5"})
_VALIDATED_EXT = frozenset({".safetensors", ".gguf", ".onnx", ".npy", ".npz"})


def check_name(path: str, fmt: str) -> list[ScanFinding]:
    """``format.mismatch`` when the name's extension promises something the bytes are not (see above)."""
    ext = extension(path)
    expected = _EXPECT.get(ext)
    if expected is not None and fmt not in expected:
        block = fmt in _DANGEROUS or ext in _VALIDATED_EXT
        return [_mismatch(path, ext, fmt, sorted(expected), "block" if block else "warn")]
    if expected is None and ext and fmt in PICKLE_FAMILY and ext not in _PICKLE_EXT:
        return [_mismatch(path, ext, fmt, ["anything but a pickle"], "block")]
    return []


def _mismatch(path: str, ext: str, fmt: str, expected: list[str], severity: str) -> ScanFinding:
    return ScanFinding("format.mismatch", f"{path} is named {ext} but its bytes are {fmt}", severity,
                       data={"extension": ext, "detected": fmt, "expected": expected})


def _zip_kind(src: Source) -> str:
    """torch-zip (has a ``data.pkl`` at the top or one folder down), npz (only ``.npy`` members), else zip."""
    try:
        with zipfile.ZipFile(source_file(src)) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error):
        return "zip"
    if any(n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1) for n in names):
        return "torch-zip"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"


def _is_prefixed_zip(src: Source) -> bool:
    """A zip with bytes before its first member (junk prefix, zip appended to something): still a zip."""
    tail = src.read_at(max(0, src.size - 65558), 65558)
    if b"PK\x05\x06" not in tail:
        return False
    try:
        with zipfile.ZipFile(source_file(src)) as zf:
            return bool(zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error):
        return False


def _is_safetensors(head: bytes, size: int) -> bool:
    """u64 header length that fits the file, then a JSON object (leading spaces tolerated: the validator
    rejects them)."""
    if size < 10 or len(head) < 9:
        return False
    n = struct.unpack_from("<Q", head)[0]
    return 2 <= n <= size - 8 and head[8:].lstrip(b" ")[:1] == b"{"


def _is_text(prefix: bytes, whole: bool) -> bool:
    """UTF-8 (a character cut at the prefix's end is fine) with no NUL or stray control bytes."""
    if b"\x00" in prefix:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(prefix, final=whole)
    except UnicodeDecodeError:
        return False
    controls = sum(1 for b in prefix if b < 0x20 and b not in b"\t\n\r\f\v\x1b")
    return controls == 0


_OPCODE_BYTES = frozenset(ord(op.code) for op in pickletools.opcodes)


class _PrefixEndError(Exception):
    """The sniffed prefix ended inside an opcode."""


class _Prefix(io.BytesIO):
    def read(self, n: int | None = -1) -> bytes:
        data = super().read(n)
        if n is not None and n > 0 and len(data) < n:
            raise _PrefixEndError
        return data

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        if not line.endswith(b"\n"):
            raise _PrefixEndError
        return line


def looks_like_old_pickle(prefix: bytes, whole: bool, min_ops: int = 16) -> bool:
    """Protocol 0/1 pickles have no magic: parse the prefix with ``pickletools.genops`` and simulate the
    stack (marks, pops, memo) as ``pickletools.dis`` does. A pickle: STOP reached with a consistent
    stack, or at least ``min_ops`` consistent opcodes before the prefix (or a truncated file) ends.
    """
    if not prefix or prefix[0] not in _OPCODE_BYTES:
        return False
    stack: list[bool] = []  # True marks a MARK
    memo: set[Any] = set()
    ops = after = 0
    f = _Prefix(prefix)
    try:
        for op, arg, _pos in pickletools.genops(f):
            ops += 1
            after = f.tell()
            if not _simulate(op, arg, stack, memo):
                return False
            if op.name == "STOP":
                return not stack
    except _PrefixEndError:
        # A text argument longer than the prefix (a protocol-0 string padding the payload out of view)
        # is read as a pickle: the full walk then decides.
        pending = prefix[after:after + 2]
        return ops >= min_ops or (not whole and (pending[:1] == b"V" or pending in (b"S'", b'S"')))
    except (ValueError, KeyError, IndexError, struct.error, UnicodeDecodeError):
        return False
    return False


def _simulate(op: pickletools.OpcodeInfo, arg: Any, stack: list[bool], memo: set[Any]) -> bool:
    """Apply one opcode's stack effect; False if the unpickler would fail here."""
    before = op.stack_before
    if op.name == "POP" and stack and stack[-1]:
        stack.pop()
        return True
    if pickletools.markobject in before:
        if True not in stack:
            return False
        del stack[len(stack) - 1 - stack[::-1].index(True):]
        need = before.index(pickletools.markobject)
    else:
        need = len(before)
    if len(stack) < need or (need and any(stack[-need:])):
        return False
    del stack[len(stack) - need:]
    stack.extend(x is pickletools.markobject for x in op.stack_after)
    if op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
        memo.add(arg)
    elif op.name == "MEMOIZE":
        memo.add(len(memo))
    elif op.name in ("GET", "BINGET", "LONG_BINGET") and arg not in memo:
        return False
    return True


class _SourceFile(io.RawIOBase):
    """A seekable read-only file over a ``Source``, for ``zipfile``/``tarfile``."""

    def __init__(self, src: Source) -> None:
        self._src = src
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._src.size}[whence]
        if base + offset < 0:
            raise OSError("seek before the start")
        self._pos = base + offset
        return self._pos

    def readinto(self, b: Any) -> int:
        data = self._src.read_at(self._pos, len(b))
        n = len(data)
        b[:n] = data
        self._pos += n
        return n


def source_file(src: Source) -> io.BufferedReader:
    """A buffered, seekable file object over ``src`` (what ``zipfile`` and ``tarfile`` want)."""
    return io.BufferedReader(_SourceFile(src), buffer_size=1 << 16)
