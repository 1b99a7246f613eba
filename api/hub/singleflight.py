"""One blocking load per key at a time: concurrent callers that miss the same cache entry share it.

When a cached ref answer expires, or a new commit is first asked for, hundreds of GPU nodes may
miss at once. Without this each of them would run the same DB query in the threadpool (and queue
behind each other there); with it the first caller loads and the rest wait for its answer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import anyio
from starlette.concurrency import run_in_threadpool

T = TypeVar("T")


class _Flight(Generic[T]):
    __slots__ = ("done", "result", "error")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[T]):
    """Event-loop side only: ``await flights.run(key, load)`` runs ``load`` in the threadpool once per key."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, _Flight[T]] = {}

    async def run(self, key: Hashable, load: Callable[[], T]) -> T:
        while True:
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(key, load)
            await flight.done.wait()
            if flight.error is not None:
                raise _own_copy(flight.error) from flight.error
            if flight.result is not None:
                return flight.result
            # The leader was cancelled before it had an answer: try again (maybe as the leader).

    async def _lead(self, key: Hashable, load: Callable[[], T]) -> T:
        flight: _Flight[T] = _Flight()
        self._flights[key] = flight
        try:
            flight.result = await run_in_threadpool(load)
            return flight.result
        except Exception as exc:  # shared with the waiters: the same miss fails the same way
            flight.error = exc
            raise
        finally:
            del self._flights[key]
            flight.done.set()

    def __len__(self) -> int:
        return len(self._flights)


def _own_copy(error: BaseException) -> BaseException:
    """A copy for one waiter to raise: one shared instance would collect every waiter's frames."""
    try:
        return copy.copy(error)
    except Exception:  # noqa: BLE001 - an exception class that cannot be rebuilt from its args
        return error
