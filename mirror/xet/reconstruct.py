"""Answer a reconstruction query: which chunks of which xorbs make up (a byte range of) a file.

Pure over a file record (mirror/xet/store.py) and, for a term cut by the range, its xorb's footer.
The HTTP layer (api/hub/xet.py) turns a Plan into the protocol's v1 or v2 JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mirror.xet.formats import XorbFooter
from mirror.xet.store import XetFile


@dataclass(frozen=True)
class PlannedTerm:
    xorb: str
    chunk_start: int
    chunk_end: int  # exclusive
    unpacked_length: int
    byte_first: int  # of the serialized xorb, inclusive
    byte_last: int


@dataclass(frozen=True)
class Plan:
    offset_into_first_range: int
    terms: tuple[PlannedTerm, ...]


class RangeNotSatisfiable(ValueError):
    pass


def plan(record: XetFile, byte_range: tuple[int, int] | None,
         footer_of: Callable[[str], XorbFooter]) -> Plan:
    """The terms covering ``byte_range`` (inclusive; the end is clipped to the file) of ``record``, and how
    many bytes of the first one to skip. Raises RangeNotSatisfiable when the range starts past the end."""
    first, last = (0, record.size - 1) if byte_range is None else byte_range
    if first >= record.size or first > last:
        raise RangeNotSatisfiable(f"range starts at {first}; the file has {record.size} bytes")
    last = min(last, record.size - 1)
    out: list[PlannedTerm] = []
    offset_into_first = 0
    pos = 0
    for term in record.terms:
        end = pos + term.unpacked_size
        if end <= first:
            pos = end
            continue
        if pos > last:
            break
        lo, hi = term.chunk_start, term.chunk_end
        chunk_pos = pos
        if pos < first:  # cut the front: skip whole chunks before ``first``
            for size in term.sizes:
                if chunk_pos + size > first:
                    break
                chunk_pos += size
                lo += 1
        if not out:
            offset_into_first = first - chunk_pos
        if end - 1 > last:  # cut the back: drop whole chunks after ``last``
            tail_pos = end
            for size in reversed(term.sizes):
                if tail_pos - size <= last:
                    break
                tail_pos -= size
                hi -= 1
        unpacked = sum(term.sizes[lo - term.chunk_start:hi - term.chunk_start])
        if (lo, hi) == (term.chunk_start, term.chunk_end):
            b_first, b_last = term.byte_start, term.byte_end
        else:
            b_first, b_last = footer_of(term.xorb).byte_range(lo, hi)
        out.append(PlannedTerm(term.xorb, lo, hi, unpacked, b_first, b_last))
        pos = end
    return Plan(offset_into_first, tuple(out))
