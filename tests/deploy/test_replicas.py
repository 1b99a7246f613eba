"""API replicas and workers start at once on a fresh PostgreSQL database (a first `helm install`): each
migrates on start (registry.db.upgrade), so they must take turns, not fail on each other's half-made schema."""

from __future__ import annotations

import multiprocessing
import traceback
import uuid

import pytest

from .tools import PASSWORD

PODS = 6


def _start(url: str, barrier: multiprocessing.synchronize.Barrier, errors: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from registry.db import make_engine
    from registry.settings import DatabaseSettings

    try:
        barrier.wait(60)
        make_engine(DatabaseSettings(url=url)).dispose()
    except Exception:
        errors.put(traceback.format_exc()[-2500:])
        raise SystemExit(1)


@pytest.mark.integration
def test_processes_migrating_an_empty_database_at_once_all_succeed(scram_postgres: int) -> None:
    import os

    import psycopg

    import registry.db  # noqa: F401  (imported before the fork: the children start at once)

    name = f"hubgate_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(host="127.0.0.1", port=scram_postgres, user="postgres", password=PASSWORD,
                         dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:{scram_postgres}/{name}"
    ctx = multiprocessing.get_context("fork")
    barrier, errors = ctx.Barrier(PODS), ctx.Queue()
    old = os.environ.get("PGPASSWORD")
    os.environ["PGPASSWORD"] = PASSWORD  # inherited by the children
    try:
        procs = [ctx.Process(target=_start, args=(url, barrier, errors)) for _ in range(PODS)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
    finally:
        os.environ.pop("PGPASSWORD") if old is None else os.environ.__setitem__("PGPASSWORD", old)
    failures = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert [p.exitcode for p in procs] == [0] * PODS, "\n---\n".join(failures)
    with psycopg.connect(host="127.0.0.1", port=scram_postgres, user="postgres", password=PASSWORD, dbname=name) as conn:
        (head,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert head
