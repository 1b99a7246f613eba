"""Integration fixtures: the server-flavour parameter, a fresh HF cache per test, and isolation of
the in-process HF client (no token, no telemetry, loopback only)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.hubgate import FLAVOURS, HubgateServer

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(scope="session", autouse=True)
def _isolated_hf_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import huggingface_hub.constants as c

    home = tmp_path_factory.mktemp("hf-home")
    mp = pytest.MonkeyPatch()
    mp.setattr(c, "HF_HUB_DISABLE_TELEMETRY", True)
    mp.setattr(c, "HF_TOKEN_PATH", str(home / "token"))
    mp.setattr(c, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    mp.setattr(c, "HF_HUB_CACHE", str(home / "hub"))  # a call that forgets cache_dir still stays in tmp
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        mp.delenv(var, raising=False)
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to resolve a non-loopback name (the real Hub) fails the call at once."""
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in LOOPBACK:
            raise socket.gaierror(socket.EAI_NONAME, f"integration tests stay on 127.0.0.1, not {name}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.fixture(params=FLAVOURS)
def hub(request: pytest.FixtureRequest) -> HubgateServer:
    """Each hubgate flavour in turn: local store, S3 + redirect, S3 + proxy."""
    return request.getfixturevalue("hubgate_" + request.param.replace("-", "_"))  # type: ignore[no-any-return]


@pytest.fixture
def hf_cache(tmp_path: Path) -> Path:
    """A fresh HF hub cache folder for one test."""
    return tmp_path / "hf-cache"
