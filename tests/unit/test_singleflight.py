"""Concurrent misses of one cache key run one load; different keys do not wait for each other."""

from __future__ import annotations

import threading

import anyio
import pytest

from api.hub.singleflight import SingleFlight


class _Load:
    def __init__(self, result: object = "answer", error: Exception | None = None) -> None:
        self.calls = 0
        self.release = threading.Event()
        self.result, self.error = result, error

    def __call__(self) -> object:
        self.calls += 1
        assert self.release.wait(10), "the test never released the load"
        if self.error is not None:
            raise self.error
        return self.result


async def _gather(flights: SingleFlight, key: object, load: _Load, n: int) -> list[object]:
    results: list[object] = []

    async def call() -> None:
        try:
            results.append(await flights.run(key, load))
        except Exception as exc:  # noqa: BLE001 - collected for the assertions
            results.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(call)
        await anyio.sleep(0.05)  # every caller is now waiting on the one load
        load.release.set()
    return results


def test_concurrent_misses_share_one_load() -> None:
    flights: SingleFlight = SingleFlight()
    load = _Load()
    results = anyio.run(_gather, flights, "main", load, 100)
    assert load.calls == 1
    assert results == ["answer"] * 100
    assert len(flights) == 0


def test_a_failed_load_fails_every_waiter_and_the_next_miss_loads_again() -> None:
    flights: SingleFlight = SingleFlight()
    failing = _Load(error=LookupError("no such revision"))
    results = anyio.run(_gather, flights, "main", failing, 5)
    assert failing.calls == 1
    assert all(isinstance(r, LookupError) and str(r) == "no such revision" for r in results)
    assert len({id(r) for r in results}) == 5  # each its own instance, so tracebacks do not pile up on one
    retry = _Load(result="now there")
    retry.release.set()
    assert anyio.run(flights.run, "main", retry) == "now there"
    assert retry.calls == 1


def test_different_keys_load_separately() -> None:
    flights: SingleFlight = SingleFlight()
    a, b = _Load("a"), _Load("b")

    async def both() -> tuple[list[object], list[object]]:
        out: dict[str, list[object]] = {}

        async def run(name: str, load: _Load) -> None:
            out[name] = await _gather(flights, name, load, 3)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "a", a)
            tg.start_soon(run, "b", b)
        return out["a"], out["b"]

    ra, rb = anyio.run(both)
    assert (ra, rb, a.calls, b.calls) == (["a"] * 3, ["b"] * 3, 1, 1)


def test_a_cancelled_leader_does_not_strand_its_waiters() -> None:
    flights: SingleFlight = SingleFlight()
    load = _Load()

    async def scenario() -> list[object]:
        got: list[object] = []

        async def leader() -> None:
            with anyio.move_on_after(0.05):  # the first request goes away mid-load
                await flights.run("main", load)

        async def follower() -> None:
            got.append(await flights.run("main", load))

        async with anyio.create_task_group() as tg:
            tg.start_soon(leader)
            await anyio.sleep(0.02)
            tg.start_soon(follower)
            await anyio.sleep(0.1)
            load.release.set()
        return got

    assert anyio.run(scenario) == ["answer"]
    assert load.calls in (1, 2)  # shared, or reloaded by the follower if the leader had no answer
    assert len(flights) == 0


@pytest.mark.parametrize("n", [1, 2])
def test_a_single_caller_just_loads(n: int) -> None:
    flights: SingleFlight = SingleFlight()
    load = _Load(result=n)
    load.release.set()
    assert anyio.run(flights.run, "k", load) == n
