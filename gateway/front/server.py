"""The runner and server that put the front (front/protocol.py) on every site of an app: aiohttp's
sites ask the runner's server for a protocol per connection, and this server answers with the
front's, keeping aiohttp's own (`handler_class`) for the connections handed to it.

A `Lane` may answer a request before any aiohttp object is made for it: the gateway's lane
(gateway/lane/) serves the requests that make up its load that way."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from aiohttp import web

from .protocol import FrontProtocol

__all__ = ["FrontRunner", "Lane"]


class Lane(Protocol):
    def take(
        self, request: web.Request, connection: FrontProtocol
    ) -> bool | Callable[[], Coroutine[Any, Any, bool]] | None:
        """Answer the request now by writing to `connection` (True: it may stay open, False:
        close it after), or give what is left to await for the answer (the front runs it in
        a task), or return None, having done nothing, for the app to answer it."""

    def abandoned(self, request: web.Request, connection: FrontProtocol) -> None:
        """The client went away before the task that was to answer `request` (the lane's
        rest, or the app) ever ran, so none of its code will: count and log the request."""


class FrontServer(web.Server):
    """aiohttp's server for the same app (the same request factory, handler and handler
    arguments), whose connections meet the front first."""

    def __init__(
        self,
        around: web.Server,
        *,
        handler_class: type[web.RequestHandler],
        lane: Lane | None,
        idle_timeout: float,
        max_head_bytes: int,
        max_headers: int,
    ) -> None:
        super().__init__(
            around.request_handler,
            request_factory=around.request_factory,
            handler_cancellation=around.handler_cancellation,
            loop=around._loop,
            **around._kwargs,
        )
        self.loop: asyncio.AbstractEventLoop = around._loop
        self.lane = lane
        self._handler_class = handler_class
        self.idle_timeout = idle_timeout
        # Past these aiohttp's parser (with the same limits) answers: 400 or 431.
        self.max_head_bytes = max_head_bytes
        self.max_headers = max_headers
        self.fronted: set[FrontProtocol] = set()

    def __call__(self) -> Any:
        return FrontProtocol(self)

    def hand_over(self) -> web.RequestHandler:
        """aiohttp's protocol, for a connection the front hands over."""
        return self._handler_class(self, loop=self.loop, **self._kwargs)

    def pre_shutdown(self) -> None:
        for connection in list(self.fronted):
            connection.close_idle()
        super().pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - aiohttp's signature
        busy = [connection for connection in self.fronted if not connection.close_idle()]
        if busy:
            # What aiohttp gives its own connections: until the timeout, then cut.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*(connection.closed() for connection in busy))
            for connection in busy:
                connection.abort()
        await super().shutdown(timeout)


class FrontRunner(web.AppRunner):
    """`web.AppRunner` whose server is a `FrontServer`."""

    def __init__(
        self,
        app: web.Application,
        *,
        handler_class: type[web.RequestHandler] = web.RequestHandler,
        lane: Lane | None = None,
        idle_timeout: float,
        max_head_bytes: int,
        max_headers: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._front = {
            "handler_class": handler_class,
            "lane": lane,
            "idle_timeout": idle_timeout,
            "max_head_bytes": max_head_bytes,
            "max_headers": max_headers,
        }

    async def _make_server(self) -> web.Server:
        return FrontServer(await super()._make_server(), **self._front)  # type: ignore[arg-type]
