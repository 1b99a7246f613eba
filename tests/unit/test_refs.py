from __future__ import annotations

import pytest

from registry.errors import InvalidInputError
from registry.refs import RefName, parse_ref


@pytest.mark.parametrize(
    ("value", "name", "kind", "full"),
    [
        ("main", "main", "branch", "refs/heads/main"),
        ("feature/x", "feature/x", "branch", "refs/heads/feature/x"),
        ("v1.0", "v1.0", "branch", "refs/heads/v1.0"),
        ("refs/heads/dev", "dev", "branch", "refs/heads/dev"),
        ("refs/heads/a/b", "a/b", "branch", "refs/heads/a/b"),
        ("refs/tags/v1.0", "v1.0", "tag", "refs/tags/v1.0"),
        ("refs/pr/1", "refs/pr/1", "pr", "refs/pr/1"),
        ("refs/pr/123456789", "refs/pr/123456789", "pr", "refs/pr/123456789"),
        ("refs/convert/parquet", "refs/convert/parquet", "convert", "refs/convert/parquet"),
    ],
)
def test_parse_ref(value: str, name: str, kind: str, full: str) -> None:
    ref = parse_ref(value)
    assert ref == RefName(name, kind)
    assert ref.full == full


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a" * 40,  # looks like a commit
        "refs/heads/" + "b" * 40,
        "refs/tags/" + "c" * 40,
        "refs/pr/0",
        "refs/pr/01",
        "refs/pr/abc",
        "refs/pr/1/x",
        "refs/pr/1234567890",
        "refs/pr/",
        "refs/heads/",
        "refs/tags/",
        "refs/convert/",
        "refs/heads/refs/x",
        "refs/tags/refs/heads/x",
        "refs/other/x",
        "refs/x",
        "../x",
        "refs/heads/../x",
        "a//b",
        "main.lock",
    ],
)
def test_parse_ref_rejects(value: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_ref(value)
