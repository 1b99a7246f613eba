from __future__ import annotations

import pytest

from api.hub.ranges import RangeNotSatisfiableError, parse_range


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=0-0", 100, (0, 0)),
        ("bytes=5-", 100, (5, 99)),
        ("bytes=99-", 100, (99, 99)),
        ("bytes=-3", 100, (97, 99)),
        ("bytes=-100", 100, (0, 99)),
        ("bytes=-500", 100, (0, 99)),  # suffix longer than the file: the whole file
        ("bytes=0-1000", 100, (0, 99)),  # clamped at the end
        ("bytes=90-1000", 100, (90, 99)),
        ("bytes=0-", 1, (0, 0)),
        ("Bytes=1-2", 100, (1, 2)),  # the unit is case-insensitive
        (" bytes = 1 - 2 ", 100, (1, 2)),
    ],
)
def test_satisfiable_ranges(header: str, size: int, expected: tuple[int, int]) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=1000-", 100), ("bytes=-0", 100),
     ("bytes=0-", 0), ("bytes=0-9", 0), ("bytes=-1", 0)],
)
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiableError) as info:
        parse_range(header, size)
    assert info.value.size == size


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=abc",
        "bytes=a-b",
        "bytes=1-a",
        "bytes=+1-2",
        "bytes=1.5-2",
        "bytes=9-5",  # end before start: invalid, ignored
        "bytes=0-1,3-4",  # multi-range: served whole
        "bytes=0-1, 5-",
        "items=0-9",
        "pages=1-2",
        "0-9",
        "bytes=0x1-2",
        "bytes=" + "1" * 2000 + "-",  # over-long header
    ],
)
def test_ignored_headers(header: str | None) -> None:
    assert parse_range(header, 100) is None


@pytest.mark.parametrize("header", ["bytes=\u00b2-", "bytes=0-\u00b9", "bytes=-\u00b3"])
def test_non_ascii_digits_are_malformed_not_a_crash(header: str) -> None:
    assert parse_range(header, 100) is None

