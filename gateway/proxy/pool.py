"""A bounded keep-alive pool of HTTP/1.1 connections to one target of an upstream.

At most `max_connections` are open; a request beyond that waits for one to come back, for no
longer than the connect timeout. Idle connections are reused newest first (the oldest are the
likeliest to have been closed by the upstream), dropped as soon as the upstream closes them or
writes anything unasked, and never kept longer than `IDLE_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from typing import Final

from yarl import URL

from ..config import UpstreamConfig
from .http1 import UpstreamConnection, Watchdog

__all__ = ["ConnectFailed", "ConnectionPool", "TlsFailed"]

# Shorter than the idle timeouts of common servers behind us would be ideal, but those vary
# (gunicorn 2 s, nginx 75 s); a close is noticed the moment it arrives anyway.
IDLE_TIMEOUT: Final = 15.0


class ConnectFailed(Exception):
    """No connection could be made (refused, unreachable, or the connect timed out), or none
    came free in time (`refused` False: the target is busy, not down)."""

    def __init__(self, message: str, *, refused: bool = True) -> None:
        super().__init__(message)
        self.refused = refused


class TlsFailed(ConnectFailed):
    """The TLS handshake failed: the upstream's certificate did not verify (expired, another
    host's, an unknown CA), it refused ours, or it does not speak TLS."""


class ConnectionPool:
    """Connections to one target, shared by every request to it."""

    def __init__(self, upstream: UpstreamConfig, url: URL) -> None:
        self._host = url.host or "127.0.0.1"
        self._port = url.port or (443 if url.scheme == "https" else 80)
        # Built with the config (config/tls.py): None for http://.
        self._ssl = upstream.tls.context
        self._server_name = (upstream.tls.server_name or None) if self._ssl else None
        self._limit = upstream.max_connections
        self._connect_timeout = upstream.connect_timeout
        self._read_timeout = upstream.read_timeout
        self._idle: collections.deque[UpstreamConnection] = collections.deque()
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self._watchdog: Watchdog | None = None

    @property
    def pending(self) -> int:
        """Requests waiting for a connection to come back."""
        return len(self._waiters)

    @property
    def saturated(self) -> bool:
        """Every connection is busy: a new request would wait for one."""
        return not self._idle and self._open >= self._limit

    async def acquire(self) -> tuple[UpstreamConnection, bool]:
        """A connection for one exchange, and whether it was reused from the pool."""
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.broken and now - connection.idle_since < IDLE_TIMEOUT:
                return connection, True
            self._discard(connection)
        if self._open >= self._limit:
            await self._wait_for_room()
            return await self.acquire()
        self._open += 1
        try:
            return await self._connect(), False
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    def release(self, connection: UpstreamConnection) -> None:
        """Give a connection back after its exchange: pooled if reusable, closed otherwise."""
        connection.finish()
        if connection.reusable() and not self._closed:
            self._idle.append(connection)
        else:
            self._discard(connection)
            return
        self._wake_one()

    def close(self) -> None:
        """Close the idle connections; busy ones close when they are released."""
        self._closed = True
        while self._idle:
            self._discard(self._idle.pop())
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectFailed("the upstream pool was closed"))

    async def _connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        if self._watchdog is None:
            self._watchdog = Watchdog(loop, self._read_timeout)
        watchdog = self._watchdog
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: UpstreamConnection(loop, self._read_timeout, watchdog),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._server_name,
                )
        except TimeoutError:
            raise ConnectFailed(f"connect timed out after {self._connect_timeout:g}s") from None
        except ssl.SSLError as exc:
            # (An SSLError is an OSError too.) The reason is what an operator needs to see.
            raise TlsFailed(
                getattr(exc, "verify_message", None) or exc.reason or str(exc)
            ) from None
        except OSError as exc:
            raise ConnectFailed(exc.strerror or type(exc).__name__) from None
        return connection

    async def _wait_for_room(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await waiter
        except TimeoutError:
            raise ConnectFailed(
                f"all {self._limit} connections stayed busy for {self._connect_timeout:g}s",
                refused=False,
            ) from None
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _discard(self, connection: UpstreamConnection) -> None:
        connection.close()
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
