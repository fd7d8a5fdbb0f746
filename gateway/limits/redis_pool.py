"""The Redis client the limiters share their counters through."""

from __future__ import annotations

import redis.asyncio as redis_asyncio

__all__ = ["bounded_redis"]

# Each limiter script takes well under a millisecond: 32 connections serve thousands a second.
_CONNECTIONS = 32


def bounded_redis(url: str, *, wait: float, timeout: float) -> redis_asyncio.Redis:
    """A client whose pool makes callers wait up to `wait` seconds for a connection. redis-py's
    default pool refuses callers beyond its size (MaxConnectionsError), and a limiter that takes
    a refusal as an outage fails open: a burst of a few hundred requests would turn it off.
    `timeout` bounds connecting and each command."""
    pool = redis_asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=_CONNECTIONS,
        timeout=wait,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    return redis_asyncio.Redis(connection_pool=pool)
