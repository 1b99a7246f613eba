"""Services.actor: tokens are answered from a short cache on the event loop; concurrent misses of
one token share one DB lookup (hundreds of nodes start with the same HF_TOKEN)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from api.app import build_services
from api.services import Services
from api.settings import load
from registry import audit, tokens
from registry.db import session_scope


@pytest.fixture
def svc(tmp_path: Path) -> Services:
    return build_services(load(environ={"HUBGATE_DATA_DIR": str(tmp_path / "data"), "HUBGATE_WORKER_IN_PROCESS": "false"}))


def _gather(svc: Services, token: str, n: int) -> list[object]:
    results: list[object] = []

    async def main() -> None:
        async def call() -> None:
            results.append(await svc.actor(token))

        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(call)

    anyio.run(main)
    return results


def _count_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens looked up in the DB, in order."""
    lookups: list[str] = []
    real = tokens.authenticate

    def counting(session, token, **kwargs):  # type: ignore[no-untyped-def]
        lookups.append(token)
        return real(session, token, **kwargs)

    monkeypatch.setattr(tokens, "authenticate", counting)
    return lookups


def test_concurrent_requests_with_one_token_share_one_lookup(svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    with session_scope(svc.engine) as session:
        token = tokens.create(session, name="gpu-nodes", role="reader", actor=audit.SYSTEM, key=svc.token_key,
                              expires_days=90).token
    lookups = _count_lookups(monkeypatch)
    results = _gather(svc, token, 50)
    assert [(a.name, a.role) for a in results] == [("gpu-nodes", "reader")] * 50  # type: ignore[attr-defined]
    assert len(lookups) == 1
    assert _gather(svc, token, 5) and len(lookups) == 1  # then answered from the cache


def test_an_unknown_token_is_none_and_cached_as_such(svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = _count_lookups(monkeypatch)
    assert _gather(svc, "hg_nope_nope", 10) == [None] * 10
    assert len(lookups) == 1
