"""Rate limits: token buckets in memory, per process (so per replica: N replicas allow N times the budget).

Separate budgets, each "so many per minute (or hour)", as a bucket holding that much and refilling
at that rate, so a burst of one period's worth passes at once:

* failed authentications per client address (a token lookup that finds nothing valid);
* mirror requests created per token;
* Hub reads (resolve, repo info, tree, paths-info, refs, commits, listings) per client address
  and per token.

The client address is what uvicorn reports: behind a proxy, the ``X-Forwarded-For`` it trusts
(``FORWARDED_ALLOW_IPS``). A check is one dict lookup and a little arithmetic, on the event loop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from registry.errors import HubgateError


class RateLimitedError(HubgateError):
    """Too many requests of one kind from one client or token; ``retry_after`` seconds until one passes."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class RateLimiter:
    """Token buckets by key, all with one rate (per second) and capacity. Not thread-safe: call it from
    the event loop (a race from threads would only lose a decrement)."""

    def __init__(self, per_period: float, period_seconds: float, *, max_keys: int = 100_000) -> None:
        if per_period <= 0 or period_seconds <= 0:
            raise ValueError("a rate limiter needs a positive budget and period")
        self.capacity = float(per_period)
        self.rate = per_period / period_seconds
        self.max_keys = max_keys
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens left, when last updated (monotonic)]

    def take(self, key: str, now: float | None = None) -> float:
        """Spend one; 0.0 if it passed, else the seconds until one will."""
        if now is None:
            now = time.monotonic()
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            self._buckets[key] = [self.capacity - 1.0, now]
            return 0.0
        tokens = b[0] + (now - b[1]) * self.rate
        if tokens > self.capacity:
            tokens = self.capacity
        b[1] = now
        if tokens >= 1.0:
            b[0] = tokens - 1.0
            return 0.0
        b[0] = tokens
        return (1.0 - tokens) / self.rate

    def wait(self, key: str, now: float | None = None) -> float:
        """The seconds until one would pass (0.0: now), without spending it."""
        b = self._buckets.get(key)
        if b is None:
            return 0.0
        tokens = b[0] + ((time.monotonic() if now is None else now) - b[1]) * self.rate
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        """Forget buckets that have refilled (they carry no information); if none has, forget all."""
        full = [k for k, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.rate >= self.capacity]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()


def _limiter(per_period: float, period_seconds: float) -> RateLimiter | None:
    return RateLimiter(per_period, period_seconds) if per_period > 0 else None


@dataclass
class Limits:
    """The process's buckets, from the settings; a budget of 0 turns that limit off."""

    auth_failures: RateLimiter | None
    requests: RateLimiter | None
    hub_by_address: RateLimiter | None
    hub_by_token: RateLimiter | None
    denied_records: RateLimiter  # denied admin calls written to the audit log (a flood must not fill it)

    @classmethod
    def from_settings(cls, *, auth_failures_per_minute: int, requests_per_hour: int,
                      hub_reads_per_minute_per_address: int, hub_reads_per_minute_per_token: int,
                      denied_records_per_minute: int = 60) -> Limits:
        return cls(
            auth_failures=_limiter(auth_failures_per_minute, 60),
            requests=_limiter(requests_per_hour, 3600),
            hub_by_address=_limiter(hub_reads_per_minute_per_address, 60),
            hub_by_token=_limiter(hub_reads_per_minute_per_token, 60),
            denied_records=RateLimiter(denied_records_per_minute, 60, max_keys=1),
        )

    def check_auth_failures(self, address: str | None) -> None:
        """Before a token lookup: refuse a client whose failed authentications used up its budget."""
        if self.auth_failures is not None and address is not None:
            wait = self.auth_failures.wait(address)
            if wait:
                raise RateLimitedError("Too many failed authentications from this address; try again later", wait)

    def auth_failed(self, address: str | None) -> None:
        if self.auth_failures is not None and address is not None:
            self.auth_failures.take(address)

    def request_created(self, token_id: str | None) -> None:
        """Before a mirror request is created: raises RateLimitedError past the token's budget."""
        if self.requests is not None and token_id is not None:
            wait = self.requests.take(token_id)
            if wait:
                raise RateLimitedError("Too many mirror requests from this token; try again later", wait)

    def hub_read(self, address: str | None, token_id: str | None) -> None:
        """Before a Hub read: raises RateLimitedError past the address's or the token's budget."""
        if self.hub_by_address is not None and address is not None:
            wait = self.hub_by_address.take(address)
            if wait:
                raise RateLimitedError("Too many requests from this address; slow down", wait)
        if self.hub_by_token is not None and token_id is not None:
            wait = self.hub_by_token.take(token_id)
            if wait:
                raise RateLimitedError("Too many requests with this token; slow down", wait)
