"""A static pickle opcode walker: which globals a pickle stream imports, without unpickling anything.

Why our own loop rather than ``pickletools.genops``: genops decodes and copies every argument (a
1 GiB ``BINBYTES8`` becomes a 1 GiB ``bytes``) and costs a generator step plus a tuple per opcode.
This walker uses pickletools' opcode table, reads the stream forward in 1 MiB chunks, skips
payloads without copying them, and lets one compiled regex consume runs of opcodes that cannot
import anything (``MARK``, ``BININT1``, ``APPENDS``, ...). ``tests/scan`` checks it against genops.

What it tracks, and why that is enough:

* ``GLOBAL``/``INST`` carry ``module\\nname\\n`` in-line.
* ``STACK_GLOBAL`` takes module and name from the stack. They are resolved only when the last two
  stack-changing opcodes were pushes of known strings (a string opcode, or a ``GET`` of a memo slot
  that holds a known string); ``MEMOIZE``/``PUT``/``FRAME`` in between do not change the stack.
  That is exactly what every Python pickler writes. Anything else cannot be resolved statically and
  is reported (the caller blocks), so stack tricks cannot hide a name.
* ``REDUCE``/``OBJ``/``NEWOBJ``/``NEWOBJ_EX``/``BUILD`` can only call what a global put on the stack,
  so checking every global against the allowlist covers them.
* ``EXT1/2/4`` import through the copyreg extension registry: refused.
* A pickle mixing ``MEMOIZE`` with explicit ``PUT`` indices is refused: the unpickler's memo index
  for ``MEMOIZE`` is ``len(memo)``, which mixing makes ambiguous, and no Python pickler mixes them.

Any malformed opcode, argument, truncation or missing ``STOP`` raises ``PickleParseError``; the
unpickler runs the opcodes before the damage, so the caller blocks.
"""

from __future__ import annotations

import codecs
import pickletools
import re
import struct
from dataclasses import dataclass, field
from typing import BinaryIO

CHUNK = 1 << 20
LINE_KEEP = 1 << 16  # text-protocol argument lines longer than this are skipped, not held
NAME_MAX = 1024  # longer strings are never resolved as a module or attribute name

_u32 = struct.Struct("<I").unpack_from
_i32 = struct.Struct("<i").unpack_from
_u64 = struct.Struct("<Q").unpack_from
_u16 = struct.Struct("<H").unpack_from


class PickleParseError(ValueError):
    """The stream is not a well-formed pickle (or uses a construct refused on purpose, named by ``rule``)."""

    def __init__(self, message: str, offset: int, rule: str = "pickle.parse") -> None:
        super().__init__(f"{message} at byte {offset}")
        self.offset = offset
        self.rule = rule
        self.globals: list[tuple[str, str]] = []  # imported before the error: the unpickler ran those


@dataclass
class PickleWalk:
    """What one pickle stream (up to and including its STOP) imports."""

    start: int
    end: int  # offset just past STOP
    protocol: int
    globals: list[tuple[str, str]] = field(default_factory=list)  # (module, name), first-seen order, unique


# Opcode kinds. GENERIC: fixed length, no effect on what we track except "top of stack unknown".
(_INVALID, _GENERIC, _STOP, _PROTO, _FRAME, _GLOBAL, _STACK_GLOBAL, _EXT, _MEMOIZE, _PUT, _GET, _STR1,
 _STR4, _STR8, _SKIP1, _SKIP4, _SKIP4S, _SKIP8, _LINE, _USTRNL, _STRNL) = range(21)

_SPECIAL = {
    "STOP": _STOP, "PROTO": _PROTO, "FRAME": _FRAME, "GLOBAL": _GLOBAL, "INST": _GLOBAL,
    "STACK_GLOBAL": _STACK_GLOBAL, "EXT1": _EXT, "EXT2": _EXT, "EXT4": _EXT, "MEMOIZE": _MEMOIZE,
    "PUT": _PUT, "BINPUT": _PUT, "LONG_BINPUT": _PUT, "GET": _GET, "BINGET": _GET, "LONG_BINGET": _GET,
    "SHORT_BINUNICODE": _STR1, "SHORT_BINSTRING": _STR1, "BINUNICODE": _STR4, "BINSTRING": _STR4,
    "BINUNICODE8": _STR8, "UNICODE": _USTRNL, "STRING": _STRNL,
    "SHORT_BINBYTES": _SKIP1, "LONG1": _SKIP1, "BINBYTES": _SKIP4, "LONG4": _SKIP4S,
    "BINBYTES8": _SKIP8, "BYTEARRAY8": _SKIP8, "INT": _LINE, "LONG": _LINE, "FLOAT": _LINE, "PERSID": _LINE,
}
_KIND = [_INVALID] * 256
_FIXED = [0] * 256  # total length (opcode + argument) of GENERIC opcodes
for _op in pickletools.opcodes:
    _code = ord(_op.code)
    if _op.name in _SPECIAL:
        _KIND[_code] = _SPECIAL[_op.name]
    else:
        assert _op.arg is None or _op.arg.n > 0, _op.name  # every variable-length opcode is special
        _KIND[_code] = _GENERIC
        _FIXED[_code] = 1 + (_op.arg.n if _op.arg else 0)
_UNICODE_OPS = {ord(op.code) for op in pickletools.opcodes if "UNICODE" in op.name}
_GET_WIDTH = {ord("h"): 1, ord("j"): 4, ord("q"): 1, ord("r"): 4}  # BINGET, LONG_BINGET, BINPUT, LONG_BINPUT


def _generic_run_pattern() -> re.Pattern[bytes]:
    """One regex matching a run of complete GENERIC opcodes, so long runs are consumed in C."""
    by_len: dict[int, list[int]] = {}
    for code in range(256):
        if _KIND[code] == _GENERIC:
            by_len.setdefault(_FIXED[code], []).append(code)
    alts = []
    for length, codes in sorted(by_len.items()):
        cls = b"[" + b"".join(re.escape(bytes([c])) for c in codes) + b"]"
        alts.append(cls + (b"." * (length - 1) if length > 1 else b""))
    # Possessive (``++``): no backtracking state per repetition. A greedy ``+`` kept ~60 MiB of it for one
    # 1 MiB buffer of BININT1 opcodes and ran 5x slower.
    return re.compile(b"(?:" + b"|".join(alts) + b")++", re.DOTALL)


_GENERIC_RUN = _generic_run_pattern()
_HIGHEST_PROTOCOL = 5


class PickleReader:
    """A forward-only buffered view of a stream, shared by consecutive pickles (legacy torch files).

    ``offset`` is the stream position of the next unread byte. Payloads the walker skips are read
    and dropped in chunks (or seeked over when the stream can seek), never held.
    """

    def __init__(self, f: BinaryIO, start: int = 0) -> None:
        self._f = f
        self._seekable = bool(getattr(f, "seekable", lambda: False)())
        self.buf = b""
        self.pos = 0
        self.base = start  # stream offset of buf[0]

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def fill(self, need: int) -> None:
        """Make ``buf[pos:]`` hold at least ``need`` bytes unless the stream ends first."""
        if len(self.buf) - self.pos >= need:
            return
        parts = [self.buf[self.pos:]]
        have = len(parts[0])
        self.base += self.pos
        while have < need:
            chunk = self._f.read(max(CHUNK, need - have))
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        self.buf = b"".join(parts)
        self.pos = 0

    def skip(self, n: int) -> bool:
        """Advance ``n`` bytes; False if the stream ends first."""
        left = len(self.buf) - self.pos
        if n <= left:
            self.pos += n
            return True
        n -= left
        self.base += len(self.buf)
        self.buf, self.pos = b"", 0
        if self._seekable:
            here = self._f.tell()
            end = self._f.seek(0, 2)
            if here + n > end:
                self.base += end - here
                return False
            self._f.seek(here + n)
            self.base += n
            return True
        while n:
            chunk = self._f.read(min(n, CHUNK))
            if not chunk:
                return False
            n -= len(chunk)
            self.base += len(chunk)
        return True

    def at_eof(self) -> bool:
        self.fill(1)
        return self.pos >= len(self.buf)


def walk_pickle(r: PickleReader) -> PickleWalk:
    """Walk one pickle from the reader's position to its STOP; leave the reader just past it.

    Raises ``PickleParseError`` for anything the unpickler would choke on, an unresolvable
    ``STACK_GLOBAL``, an EXT opcode, mixed memo styles or an unsupported protocol.
    """
    walk = PickleWalk(start=r.offset, end=-1, protocol=0)
    seen: dict[tuple[str, str], None] = {}
    try:
        return _walk(r, walk, seen)
    except PickleParseError as e:
        e.globals = list(seen)
        raise
    except (IndexError, struct.error):  # a fixed-size argument cut by the end of the stream
        err = PickleParseError("pickle ends inside an opcode's argument", r.offset)
        err.globals = list(seen)
        raise err from None


def _walk(r: PickleReader, walk: PickleWalk, seen: dict[tuple[str, str], None]) -> PickleWalk:  # noqa: C901
    """The hot loop of ``walk_pickle``, kept flat for speed; ``seen`` collects globals as they appear.

    ``buf``/``pos``/``end`` are locals for speed; ``r.pos`` is synced before any call that reads more.
    """
    memo: dict[int, str] = {}
    memo_n = 0
    memo_style = 0  # 1: MEMOIZE, 2: PUT family
    s1: str | None = None  # value of the stack top, when it is a known string
    s2: str | None = None  # ... and of the item below it
    kinds, match = _KIND, _GENERIC_RUN.match
    buf, pos, end = r.buf, r.pos, len(r.buf)
    while True:
        if end - pos < 9:
            r.pos = pos
            r.fill(9)
            buf, pos, end = r.buf, r.pos, len(r.buf)
            if pos >= end:
                raise PickleParseError("pickle ended before STOP", r.base + pos)
        op = buf[pos]
        kind = kinds[op]
        if kind == _GENERIC:
            m = match(buf, pos)
            if m is None:
                raise PickleParseError(f"truncated argument of opcode {op:#04x}", r.base + pos)
            pos = m.end()
            s1 = s2 = None
            continue
        if kind in (_PUT, _GET):
            if op == 0x70 or op == 0x67:  # PUT, GET: decimal line
                r.pos = pos + 1
                line = _line(r)
                buf, pos, end = r.buf, r.pos, len(r.buf)
                try:
                    idx = int(line)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    raise PickleParseError("bad memo index", r.base + pos) from None
            elif op == 0x68 or op == 0x71:  # BINGET, BINPUT
                idx = buf[pos + 1]
                pos += 2
            else:
                idx = _u32(buf, pos + 1)[0]
                pos += 5
            if kind == _GET:
                s2, s1 = s1, memo.get(idx)
            else:
                if memo_style == 1:
                    raise PickleParseError("PUT mixed with MEMOIZE", r.base + pos, "pickle.memo")
                memo_style = 2
                if s1 is not None:
                    memo[idx] = s1
                elif idx in memo:
                    del memo[idx]
            continue
        if kind == _MEMOIZE:
            if memo_style == 2:
                raise PickleParseError("MEMOIZE mixed with PUT", r.base + pos, "pickle.memo")
            memo_style = 1
            if s1 is not None:
                memo[memo_n] = s1
            memo_n += 1
            pos += 1
            continue
        if _STR1 <= kind <= _STR8:
            hdr = 1 if kind == _STR1 else 4 if kind == _STR4 else 8
            n = buf[pos + 1] if hdr == 1 else (_i32 if op == 0x54 else _u32)(buf, pos + 1)[0] if hdr == 4 \
                else _u64(buf, pos + 1)[0]
            if n < 0:
                raise PickleParseError("negative string length", r.base + pos)
            pos += 1 + hdr
            value = None
            if n <= NAME_MAX:
                if end - pos < n:
                    r.pos = pos
                    r.fill(n)
                    buf, pos, end = r.buf, r.pos, len(r.buf)
                    if end - pos < n:
                        raise PickleParseError("truncated string", r.base + pos)
                value = _decode(buf[pos:pos + n], "utf-8" if op in _UNICODE_OPS else "ascii")
                pos += n
            else:
                r.pos = pos
                if not r.skip(n):
                    raise PickleParseError("truncated string", r.offset)
                buf, pos, end = r.buf, r.pos, len(r.buf)
            s2, s1 = s1, value
            continue
        if kind == _STACK_GLOBAL:
            if s1 is None or s2 is None:
                raise PickleParseError("STACK_GLOBAL whose module and name are not plain string pushes",
                                       r.base + pos, "pickle.unresolved-global")
            seen.setdefault((s2, s1))
            s1 = s2 = None
            pos += 1
            continue
        if kind == _GLOBAL:
            r.pos = pos + 1
            module = _line(r)
            name = _line(r)
            buf, pos, end = r.buf, r.pos, len(r.buf)
            if module is None or name is None:
                raise PickleParseError("global name longer than the line limit", r.base + pos)
            try:
                key = (module.decode("utf-8"), name.decode("utf-8"))
            except UnicodeDecodeError:
                raise PickleParseError("global name is not UTF-8", r.base + pos) from None
            seen.setdefault(key)
            s1 = s2 = None
            continue
        if kind == _STOP:
            r.pos = pos + 1
            walk.end = r.offset
            walk.globals = list(seen)
            return walk
        if kind == _FRAME:
            pos += 9
            continue
        if kind == _PROTO:
            if buf[pos + 1] > _HIGHEST_PROTOCOL:
                raise PickleParseError(f"unsupported pickle protocol {buf[pos + 1]}", r.base + pos)
            if walk.protocol == 0:
                walk.protocol = buf[pos + 1]
            pos += 2
            continue
        if _SKIP1 <= kind <= _SKIP8:
            hdr = 1 if kind == _SKIP1 else 8 if kind == _SKIP8 else 4
            n = buf[pos + 1] if hdr == 1 else _u64(buf, pos + 1)[0] if hdr == 8 else \
                (_i32 if kind == _SKIP4S else _u32)(buf, pos + 1)[0]
            if n < 0:
                raise PickleParseError("negative length", r.base + pos)
            r.pos = pos + 1 + hdr
            if not r.skip(n):
                raise PickleParseError("truncated payload", r.offset)
            buf, pos, end = r.buf, r.pos, len(r.buf)
            s1 = s2 = None
            continue
        if kind in (_LINE, _USTRNL, _STRNL):
            r.pos = pos + 1
            line = _line(r)
            buf, pos, end = r.buf, r.pos, len(r.buf)
            s2, s1 = s1, (_text_arg(line, kind) if line is not None and len(line) <= NAME_MAX else None)
            if kind == _LINE:
                s1 = None
            continue
        if kind == _EXT:
            raise PickleParseError("EXT opcode (copyreg extension registry import)", r.base + pos, "pickle.ext")
        raise PickleParseError(f"invalid opcode {op:#04x}", r.base + pos)


def _line(r: PickleReader) -> bytes | None:
    """The bytes up to the next newline, or None for a line longer than ``LINE_KEEP`` (skipped, not held).

    The reader moves past the newline. Raises ``PickleParseError`` if the stream ends first.
    """
    nl = r.buf.find(b"\n", r.pos)
    if nl < 0:
        r.fill(len(r.buf) - r.pos + LINE_KEEP)
        nl = r.buf.find(b"\n", r.pos)
        while nl < 0:
            if len(r.buf) - r.pos < LINE_KEEP:
                raise PickleParseError("pickle ended inside a text argument", r.offset)
            r.base += len(r.buf)
            r.buf, r.pos = b"", 0
            r.fill(CHUNK)
            if not r.buf:
                raise PickleParseError("pickle ended inside a text argument", r.offset)
            nl = r.buf.find(b"\n")
            if nl >= 0:
                r.pos = nl + 1
                return None
    line = r.buf[r.pos:nl]
    r.pos = nl + 1
    return line


def _decode(raw: bytes, encoding: str) -> str | None:
    try:
        return raw.decode(encoding, "surrogatepass" if encoding == "utf-8" else "strict")
    except UnicodeDecodeError:
        return None


def _text_arg(line: bytes, kind: int) -> str | None:
    """The str a protocol-0 UNICODE/STRING argument pushes (as the unpickler decodes it), or None."""
    if kind == _USTRNL:
        try:
            return line.decode("raw-unicode-escape")
        except UnicodeDecodeError:
            return None
    if len(line) >= 2 and line[0] == line[-1] and line[:1] in (b"'", b'"'):
        try:
            return codecs.escape_decode(line[1:-1])[0].decode("ascii")
        except (ValueError, UnicodeDecodeError):
            return None
    return None
