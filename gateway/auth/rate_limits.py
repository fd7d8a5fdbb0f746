"""Brute-force protection for /user/login: failed attempts counted per user name and address,
checked before any password hashing. Counters live in this process, or in Redis for replicas.

Trade-off (README, "Brute-force protection"): the strict limit is per user name *and* address, so an
attacker cannot lock a user out from the user's own address; a looser per-user-name limit stops
guessing spread over many addresses, and addresses that logged in as that user recently are exempt
from it; a per-address limit stops one address spraying many names. Every counter expires a window
after its first failure, so no lock lasts longer than the attack.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from ..config import RateLimitConfig
from ..errors import TooManyRequests

__all__ = ["LoginLimiter", "create_counters"]

log = logging.getLogger(__name__)


class Counters(Protocol):
    """Counters that expire a window after their first increment, and expiring marks."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, key: str) -> tuple[int, float]:
        """The count and the seconds until it resets."""
        ...

    async def increment(self, key: str, window: float) -> None: ...

    async def delete(self, *keys: str) -> None: ...

    async def mark(self, key: str, ttl: float) -> None: ...

    async def is_marked(self, key: str) -> bool: ...


class MemoryCounters:
    """Counters in this process (one gateway process, or tests)."""

    _PRUNE_AT = 100_000

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._counts: dict[str, tuple[int, float]] = {}
        self._marks: dict[str, float] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def get(self, key: str) -> tuple[int, float]:
        count, reset_at = self._counts.get(key, (0, 0.0))
        remaining = reset_at - self._clock()
        return (count, remaining) if remaining > 0 else (0, 0.0)

    async def increment(self, key: str, window: float) -> None:
        count, remaining = await self.get(key)
        reset_at = self._clock() + (remaining if count else window)
        self._counts[key] = (count + 1, reset_at)
        if len(self._counts) > self._PRUNE_AT:
            now = self._clock()
            self._counts = {k: v for k, v in self._counts.items() if v[1] > now}

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._counts.pop(key, None)

    async def mark(self, key: str, ttl: float) -> None:
        self._marks[key] = self._clock() + ttl
        if len(self._marks) > self._PRUNE_AT:
            now = self._clock()
            self._marks = {k: v for k, v in self._marks.items() if v > now}

    async def is_marked(self, key: str) -> bool:
        return self._marks.get(key, 0.0) > self._clock()


class RedisCounters:
    """Counters in Redis, shared by every replica. A Redis outage fails open (logins are
    allowed and the outage is logged): losing the limiter must not lock every user out."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._redis: redis_asyncio.Redis | None = None

    async def open(self) -> None:
        self._redis = redis_asyncio.Redis.from_url(
            self._url, socket_timeout=1.0, socket_connect_timeout=1.0
        )

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    @property
    def _client(self) -> redis_asyncio.Redis:
        if self._redis is None:
            raise RuntimeError("RedisCounters.open() was not awaited")
        return self._redis

    async def get(self, key: str) -> tuple[int, float]:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(key)
                pipe.pttl(key)
                count, ttl_ms = await pipe.execute()
        except RedisError as exc:
            log.warning("rate limit counters unavailable (%s); not limiting", type(exc).__name__)
            return 0, 0.0
        return (int(count), max(ttl_ms, 0) / 1000) if count is not None else (0, 0.0)

    async def increment(self, key: str, window: float) -> None:
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.pexpire(key, int(window * 1000), nx=True)
                await pipe.execute()
        except RedisError as exc:
            log.warning("rate limit counters unavailable (%s); not counting", type(exc).__name__)

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

    async def is_marked(self, key: str) -> bool:
        try:
            return bool(await self._client.exists(key))
        except RedisError:
            return False


def create_counters(config: RateLimitConfig) -> Counters:
    return RedisCounters(config.redis_url) if config.redis_url else MemoryCounters()


class LoginLimiter:
    """Checks and records login attempts against the configured limits."""

    def __init__(self, config: RateLimitConfig, counters: Counters) -> None:
        self._config = config
        self._counters = counters

    async def open(self) -> None:
        await self._counters.open()

    async def close(self) -> None:
        await self._counters.close()

    async def check(self, username: str, address: str) -> None:
        """Raise TooManyRequests when a limit is reached; call before hashing anything."""
        user, pair, source = _keys(username, address)
        limits = (
            (pair, self._config.per_user_and_address),
            (source, self._config.per_address),
            (user, self._config.per_user),
        )
        for key, limit in limits:
            if not limit:
                continue
            count, reset_in = await self._counters.get(key)
            if count < limit:
                continue
            if key == user and await self._counters.is_marked(_known(user, address)):
                continue  # this address logged in as this user recently
            raise TooManyRequests(reset_in)

    async def failed(self, username: str, address: str) -> None:
        for key in _keys(username, address):
            await self._counters.increment(key, self._config.window)

    async def succeeded(self, username: str, address: str) -> None:
        user, pair, _ = _keys(username, address)
        await self._counters.delete(user, pair)
        if self._config.known_address_ttl:
            await self._counters.mark(_known(user, address), self._config.known_address_ttl)


def _keys(username: str, address: str) -> tuple[str, str, str]:
    # Hashed: a key's size and characters do not depend on what a client sent.
    name = hashlib.sha256(username.lower().encode("utf-8", "replace")).hexdigest()[:32]
    return f"gw:login:u:{name}", f"gw:login:ua:{name}:{address}", f"gw:login:a:{address}"


def _known(user_key: str, address: str) -> str:
    return f"{user_key}:known:{address}"
