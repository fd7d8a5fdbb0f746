"""Graceful shutdown's state for one app: whether it is draining, how many requests it is still
handling, and what to tell the long-lived ones (WebSockets) when the drain starts.

Why the gateway drains by itself: aiohttp's shutdown (`AppRunner.cleanup`) closes every
connection for reading at once, busy ones included, so the rest of an upload still arriving is
dropped (the upload stalls, then fails) and a WebSocket goes silent. So on SIGTERM the server
first stops accepting, then lets every request go on reading and answering, each answer saying
`Connection: close` (a request arriving on a connection opened before SIGTERM is answered too).
WebSockets go on relaying; those still open when the shutdown timeout is up are closed with 1001
(going away: reconnect elsewhere) instead of being cut. Only then does aiohttp's cleanup run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web

__all__ = ["Drain"]

# How long WebSockets told 1001 get to finish their closing handshake.
CLOSE_GRACE = 1.0

log = logging.getLogger(__name__)

GoingAway = Callable[[], Awaitable[object]]


class Drain:
    """Counts the requests in flight; `drain()` starts the drain and waits for them."""

    def __init__(self) -> None:
        self.draining = False
        self._in_flight = 0
        self._idle: asyncio.Event | None = None
        self._going_away: set[GoingAway] = set()
        self._telling: list[asyncio.Task[object]] = []
        self._told = False

    def enter(self) -> None:
        """A request starts (a plain pair with `leave`, not a context manager: every request)."""
        self._in_flight += 1

    def leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0 and self._idle is not None:
            self._idle.set()

    @contextlib.contextmanager
    def until_drained(self, going_away: GoingAway) -> Iterator[None]:
        """While the block runs, `going_away()` is what ends it when the drain's grace is up
        (at once when it already is)."""
        if self._told:
            self._tell(going_away)
        self._going_away.add(going_away)
        try:
            yield
        finally:
            self._going_away.discard(going_away)

    @staticmethod
    def close_after(response: web.StreamResponse) -> None:
        """While draining, every answer closes its connection after it (the edge calls this
        just before the answer's headers go out)."""
        # aiohttp has chosen its Connection header by now: say close as well as do it.
        response.force_close()
        if response.status != 101:
            response.headers["Connection"] = "close"

    async def drain(self, grace: float) -> int:
        """Start draining and wait, up to `grace` seconds, until no request is in flight; then
        tell what is still open that it is going away, and give that CLOSE_GRACE. Return how
        many requests are still in flight."""
        self.draining = True
        await self._until_idle(grace)
        if self._in_flight and self._going_away:
            self._told = True
            for going_away in list(self._going_away):
                self._tell(going_away)
            await self._until_idle(CLOSE_GRACE)
        for task in self._telling:
            if task.done():
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await task
            else:
                task.cancel()
        return self._in_flight

    async def _until_idle(self, seconds: float) -> None:
        if self._in_flight:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), seconds)

    def _tell(self, going_away: GoingAway) -> None:
        async def tell() -> object:
            try:
                return await going_away()
            except ConnectionError as exc:  # the client is gone already
                log.debug("drain: could not say going away: %r", exc)
                return None

        self._telling.append(asyncio.ensure_future(tell()))
