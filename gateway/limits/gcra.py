"""GCRA, the generic cell rate algorithm: a token bucket kept as one number per key, the
"theoretical arrival time" (TAT) of the next request if requests came at exactly the allowed
rate. A limit of N per P allows a burst of N at once, then one every P/N.

    interval = P / N
    tat      = max(stored TAT, now)
    allowed  when tat + interval - P <= now;  then stored TAT = tat + interval

One read and one write per request, and no timer: a key expires from the store once its TAT has
passed (the bucket is full again, as if the key were new). In Redis the check and the write are
one Lua script, so concurrent requests of every process see each other's writes; the script
reads Redis's own clock, so the processes' clocks need not agree.

When Redis fails, limits are kept in this process instead (each process then allows the limit
on its own) and that is logged once, and once more when Redis answers again: a Redis outage
must not turn into an outage of every limited route.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import redis.asyncio as redis_asyncio
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from .redis_pool import bounded_redis

__all__ = ["GcraStore", "MemoryGcra", "RedisGcra", "create_gcra"]

log = logging.getLogger(__name__)

# Keys kept in memory before expired ones are dropped.
_PRUNE_AT: Final = 100_000
# The longest wait for a free Redis connection under a burst; past it the request is limited
# in this process.
_REDIS_POOL_WAIT: Final = 2.0


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    # Requests still allowed right now after this one.
    remaining: int
    # Seconds until a request would be allowed (0 when this one was).
    retry_after: float
    # Seconds until the bucket is full again.
    reset_after: float


class GcraStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def take(self, key: str, requests: int, per: float) -> Decision:
        """Count one request against `requests` per `per` seconds for `key`."""
        ...


def decide(
    stored_tat: float | None, now: float, requests: int, per: float
) -> tuple[Decision, float]:
    """The decision for one request, and the TAT to store when it is allowed."""
    interval = per / requests
    tat = now if stored_tat is None or stored_tat < now else stored_tat
    new_tat = tat + interval
    allow_at = new_tat - per
    if allow_at > now:
        return Decision(False, 0, allow_at - now, tat - now), tat
    remaining = math.floor((per - (new_tat - now)) / interval + 1e-9)
    return Decision(True, remaining, 0.0, new_tat - now), new_tat


class MemoryGcra:
    """Buckets in this process (one gateway process, or while Redis is down)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def take(self, key: str, requests: int, per: float) -> Decision:
        return self.take_now(key, requests, per)

    def take_now(self, key: str, requests: int, per: float) -> Decision:
        now = self._clock()
        decision, tat = decide(self._tats.get(key), now, requests, per)
        if decision.allowed:
            self._tats[key] = tat
            if len(self._tats) > _PRUNE_AT:
                self._tats = {k: v for k, v in self._tats.items() if v > now}
        return decision


# KEYS[1]: the bucket; ARGV: requests, per (seconds). Returns allowed (0/1), remaining, and
# retry_after and reset_after in microseconds (integers: Lua numbers lose their fraction on the
# way back). Redis's TIME is the one clock every process shares.
_SCRIPT: Final = """
local requests = tonumber(ARGV[1])
local per = tonumber(ARGV[2]) * 1000000
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local interval = per / requests
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - per
if allow_at > now then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
local remaining = math.floor((per - (new_tat - now)) / interval + 1e-9)
return {1, remaining, 0, math.ceil(new_tat - now)}
"""


class RedisGcra:
    """Buckets in Redis, shared by every process using it (see the module docstring)."""

    def __init__(self, url: str, *, fallback: MemoryGcra | None = None) -> None:
        self._url = url
        self._redis: redis_asyncio.Redis | None = None
        self._script: AsyncScript | None = None
        self._fallback = fallback or MemoryGcra()
        self._failing = False

    async def open(self) -> None:
        self._redis = bounded_redis(self._url, wait=_REDIS_POOL_WAIT, timeout=0.5)
        self._script = self._redis.register_script(_SCRIPT)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose(close_connection_pool=True)
            self._redis = None

    async def take(self, key: str, requests: int, per: float) -> Decision:
        if self._script is None:
            raise RuntimeError("RedisGcra.open() was not awaited")
        try:
            allowed, remaining, retry_us, reset_us = await self._script(
                keys=[key], args=[requests, repr(float(per))]
            )
        except RedisError as exc:
            if not self._failing:
                self._failing = True
                log.warning(
                    "route rate limits: Redis unavailable (%s); limiting in each process "
                    "until it answers again",
                    type(exc).__name__,
                )
            return self._fallback.take_now(key, requests, per)
        if self._failing:
            self._failing = False
            log.info("route rate limits: Redis answers again; limits are shared again")
        return Decision(bool(allowed), int(remaining), retry_us / 1e6, reset_us / 1e6)


def create_gcra(redis_url: str) -> GcraStore:
    """Shared buckets when a Redis URL is configured, buckets in this process otherwise."""
    return RedisGcra(redis_url) if redis_url else MemoryGcra()
