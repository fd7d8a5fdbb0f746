"""Brute-force protection for /user/login: failed attempts counted per user name and address,
counted as each attempt starts (before any password hashing) and settled when it ends, so the
limits hold under concurrency. Counters live in this process, or in Redis for replicas.

Trade-off (README, "Failed-login limits" under Sessions): the strict limit is per user name
*and* address, so an attacker cannot lock a user out from the user's own address; a looser
per-user-name limit stops guessing spread over many addresses, and addresses that logged in as
that user recently are exempt from it; a per-address limit stops one address spraying many names.
Every counter expires a window after its first failure, so no lock lasts longer than the attack.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import redis.asyncio as redis_asyncio
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from ..config import RateLimitConfig
from ..errors import TooManyRequests
from ..limits.redis_pool import bounded_redis

__all__ = ["LoginLimiter", "create_counters"]

log = logging.getLogger(__name__)
# Longest wait for a free Redis connection under a burst (each script takes well under 1 ms).
_REDIS_POOL_WAIT = 5.0


class Counters(Protocol):
    """Counters that expire a window after their first increment, and expiring marks."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def reserve(self, keys: _Keys, limits: _Limits, window: float) -> float | None:
        """In one atomic step: when every limited counter is below its limit (the user's one is
        not checked while `keys.known` is marked), add one to each and return None; otherwise
        add nothing and return the seconds until the counter at its limit resets."""
        ...

    async def release(self, *keys: str) -> None:
        """Take back one reservation from each counter (never below zero)."""
        ...

    async def delete(self, *keys: str) -> None: ...

    async def mark(self, key: str, ttl: float) -> None: ...


class _Keys(NamedTuple):
    pair: str
    source: str
    user: str
    known: str  # marked while this address is known for this user

    @property
    def counted(self) -> tuple[str, str, str]:
        return self.pair, self.source, self.user


class _Limits(NamedTuple):
    pair: int
    source: int
    user: int


class MemoryCounters:
    """Counters in this process (one gateway process, or tests). `reserve` does not await
    between its check and its increments, so it is atomic on the event loop."""

    _PRUNE_AT = 100_000

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._counts: dict[str, tuple[int, float]] = {}
        self._marks: dict[str, float] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _get(self, key: str, now: float) -> tuple[int, float]:
        count, reset_at = self._counts.get(key, (0, 0.0))
        return (count, reset_at) if reset_at > now else (0, 0.0)

    async def reserve(self, keys: _Keys, limits: _Limits, window: float) -> float | None:
        now = self._clock()
        for key, limit in zip(keys.counted, limits, strict=True):
            count, reset_at = self._get(key, now)
            if limit and count >= limit:
                if key == keys.user and self._marks.get(keys.known, 0.0) > now:
                    continue  # this address logged in as this user recently
                return reset_at - now
        for key in keys.counted:
            count, reset_at = self._get(key, now)
            self._counts[key] = (count + 1, reset_at if count else now + window)
        if len(self._counts) > self._PRUNE_AT:
            self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        return None

    async def release(self, *keys: str) -> None:
        now = self._clock()
        for key in keys:
            count, reset_at = self._get(key, now)
            if count > 1:
                self._counts[key] = (count - 1, reset_at)
            else:
                self._counts.pop(key, None)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._counts.pop(key, None)

    async def mark(self, key: str, ttl: float) -> None:
        self._marks[key] = self._clock() + ttl
        if len(self._marks) > self._PRUNE_AT:
            now = self._clock()
            self._marks = {k: v for k, v in self._marks.items() if v > now}


# KEYS: pair, source, user, known. ARGV: their three limits (0: none), the window in ms.
# Returns -1 when reserved, else the milliseconds until the counter at its limit resets.
_RESERVE = """
for i = 1, 3 do
  local limit = tonumber(ARGV[i])
  if limit > 0 and tonumber(redis.call('GET', KEYS[i]) or '0') >= limit then
    if not (i == 3 and redis.call('EXISTS', KEYS[4]) == 1) then
      return math.max(redis.call('PTTL', KEYS[i]), 0)
    end
  end
end
for i = 1, 3 do
  if redis.call('INCR', KEYS[i]) == 1 then
    redis.call('PEXPIRE', KEYS[i], ARGV[4])
  end
end
return -1
"""
_RELEASE = """
for i = 1, #KEYS do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  if count > 1 then
    redis.call('DECR', KEYS[i])
  elseif count == 1 then
    redis.call('DEL', KEYS[i])
  end
end
return 0
"""


class RedisCounters:
    """Counters in Redis, shared by every replica; each reservation is one Lua script (atomic
    across processes). A Redis outage fails open (logins are allowed and the outage is logged):
    losing the limiter must not lock every user out."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._redis: redis_asyncio.Redis | None = None
        self._reserve: AsyncScript | None = None
        self._release: AsyncScript | None = None

    async def open(self) -> None:
        self._redis = bounded_redis(self._url, wait=_REDIS_POOL_WAIT, timeout=1.0)
        self._reserve = self._redis.register_script(_RESERVE)
        self._release = self._redis.register_script(_RELEASE)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose(close_connection_pool=True)
            self._redis = None

    @property
    def _client(self) -> redis_asyncio.Redis:
        if self._redis is None:
            raise RuntimeError("RedisCounters.open() was not awaited")
        return self._redis

    async def reserve(self, keys: _Keys, limits: _Limits, window: float) -> float | None:
        if self._reserve is None:
            raise RuntimeError("RedisCounters.open() was not awaited")
        try:
            reset_ms = await self._reserve(keys=list(keys), args=[*limits, int(window * 1000)])
        except RedisError as exc:
            log.warning("rate limit counters unavailable (%s); not limiting", type(exc).__name__)
            return None
        return None if int(reset_ms) < 0 else int(reset_ms) / 1000

    async def release(self, *keys: str) -> None:
        if self._release is None:
            raise RuntimeError("RedisCounters.open() was not awaited")
        try:
            await self._release(keys=list(keys))
        except RedisError as exc:
            log.warning("rate limit counters unavailable (%s)", type(exc).__name__)

    async def delete(self, *keys: str) -> None:
        try:
            await self._client.delete(*keys)
        except RedisError as exc:
            log.warning("rate limit counters unavailable (%s)", type(exc).__name__)

    async def mark(self, key: str, ttl: float) -> None:
        try:
            await self._client.set(key, b"1", px=max(1, int(ttl * 1000)))
        except RedisError as exc:
            log.warning("rate limit counters unavailable (%s)", type(exc).__name__)


def create_counters(config: RateLimitConfig) -> Counters:
    return RedisCounters(config.redis_url) if config.redis_url else MemoryCounters()


@dataclass(slots=True)
class LoginAttempt:
    """One login attempt, counted as a failure from the moment it was reserved."""

    keys: _Keys
    settled: bool = False


class LoginLimiter:
    """Counts each login attempt as it starts and settles it when it ends, so a limit holds
    however many attempts run at once: a burst of a few hundred wrong passwords gets no more
    verdicts than the limit, in one process or across replicas sharing Redis.

    An attempt is counted as a failure when reserved (before any hashing); `succeeded` resets the
    user's counters, `abandoned` takes the reservation back (the attempt ended without a verdict
    on the password: the database or the hashing queue was unavailable); a wrong password needs
    no further step."""

    def __init__(self, config: RateLimitConfig, counters: Counters) -> None:
        self._config = config
        self._counters = counters
        self._limits = _Limits(config.per_user_and_address, config.per_address, config.per_user)

    async def open(self) -> None:
        await self._counters.open()

    async def close(self) -> None:
        await self._counters.close()

    async def reserve(self, username: str, address: str) -> LoginAttempt:
        """Count an attempt, or raise TooManyRequests when a limit is reached; call before
        hashing anything."""
        keys = _keys(username, address)
        if not any(self._limits):
            return LoginAttempt(keys)
        reset_in = await self._counters.reserve(keys, self._limits, self._config.window)
        if reset_in is not None:
            raise TooManyRequests(reset_in)
        return LoginAttempt(keys)

    async def succeeded(self, attempt: LoginAttempt) -> None:
        attempt.settled = True
        keys = attempt.keys
        if any(self._limits):
            await self._counters.delete(keys.user, keys.pair)
            # The address's counter is shared by every name it tries: a success resets none of
            # its earlier failures, but its own reservation was no failure. Without this, an
            # address behind which many users log in (a NAT, a balancer) locks itself out.
            await self._counters.release(keys.source)
        if self._config.known_address_ttl:
            await self._counters.mark(keys.known, self._config.known_address_ttl)

    async def abandoned(self, attempt: LoginAttempt) -> None:
        if attempt.settled or not any(self._limits):
            return
        attempt.settled = True
        await self._counters.release(*attempt.keys.counted)


def _keys(username: str, address: str) -> _Keys:
    # Hashed: a key's size and characters do not depend on what a client sent.
    name = hashlib.sha256(username.lower().encode("utf-8", "replace")).hexdigest()[:32]
    user = f"gw:login:u:{name}"
    return _Keys(
        pair=f"gw:login:ua:{name}:{address}",
        source=f"gw:login:a:{address}",
        user=user,
        known=f"{user}:known:{address}",
    )
