"""Single-range parsing for ``Range: bytes=…`` (RFC 9110). Linear in the header's length."""

from __future__ import annotations

from registry.errors import HubgateError

MAX_RANGE_HEADER = 1024


class RangeNotSatisfiableError(HubgateError):
    def __init__(self, size: int) -> None:
        super().__init__(f"Requested range not satisfiable (size {size})")
        self.size = size


def _digits(s: str) -> bool:
    return s == "" or (s.isascii() and s.isdigit())


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (start, end) asked for, or None to send the whole file.

    Malformed headers, other units and multiple ranges are ignored (full 200), as RFC 9110
    allows. A range that starts past the end, or an empty suffix, raises RangeNotSatisfiableError.
    """
    if not header or len(header) > MAX_RANGE_HEADER:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    if not sep:
        return None
    first, last = first.strip(), last.strip()
    if not _digits(first) or not _digits(last) or (not first and not last):
        return None
    if size == 0:
        raise RangeNotSatisfiableError(size)
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0:
            raise RangeNotSatisfiableError(size)
        return max(size - n, 0), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise RangeNotSatisfiableError(size)
    return start, min(end, size - 1)
