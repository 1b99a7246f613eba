"""Integration fixtures: the server-flavour parameter, a fresh HF cache per test, and isolation of
the in-process HF client (no token, no telemetry, loopback only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.hubgate import FLAVOURS, HubgateServer





@pytest.fixture(params=FLAVOURS)
def hub(request: pytest.FixtureRequest) -> HubgateServer:
    """Each hubgate flavour in turn: local store, S3 + redirect, S3 + proxy (S3 over moto, then over Ceph RGW)."""
    return request.getfixturevalue("hubgate_" + request.param.replace("-", "_"))  # type: ignore[no-any-return]


@pytest.fixture
def hf_cache(tmp_path: Path) -> Path:
    """A fresh HF hub cache folder for one test."""
    return tmp_path / "hf-cache"
