"""The gateway's own HTTP/1.1 server protocol, in front of aiohttp's.

It finds each request head, parses it with aiohttp's own parser (front/heads.py) and offers the
request to a lane, which may answer it by writing bytes (gateway.lane); what the lane leaves is
served through the app, its response written by aiohttp's writer. Anything the front does not
take (a body, an upgrade, `Expect`, HTTP/1.0, a head its parser refuses) goes to aiohttp: the
connection is handed over, with every byte received since the last answered request, and stays
aiohttp's. (Serving everything through the app saved nothing: the cost was in aiohttp's request
and response objects, not its protocol. README "Performance".)"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_writer import StreamWriter
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler

from .heads import HeadParser, head_end

if TYPE_CHECKING:
    from .server import FrontServer

__all__ = ["FrontProtocol"]

log = logging.getLogger(__name__)

# Bytes waiting behind the request being answered (pipelining) before reading pauses.
_MAX_WAITING = 256 * 1024


class FrontProtocol(BaseProtocol):
    """One client connection, until it closes or is handed to aiohttp."""

    def __init__(self, server: FrontServer) -> None:
        super().__init__(server.loop)
        self._server = server
        self._heads = HeadParser(
            self, server.loop, max_field_size=server.max_head_bytes, max_headers=server.max_headers
        )
        self._closed = server.loop.create_future()
        self._buffer = bytearray()
        self._task: asyncio.Task[None] | None = None
        # The task's request until the task first runs: a task cancelled before that never
        # runs its coroutine, so none of the request's own code would log it.
        self._unstarted: web.BaseRequest | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._paused_reading = False
        self._closing = False
        self._searched = 0
        # Bytes of the current answer written by a lane (how far it got, for a 499), and the
        # length of the current request's head.
        self.sent = 0
        self.head_size = 0
        # What BaseRequest reads from "its protocol".
        self.peername: Any = None
        self.sockname: Any = None
        self.ssl_context: Any = None

    # what a lane (front/server.py) answers through

    def write(self, data: bytes) -> None:
        """Send bytes of the answer; ConnectionResetError once the client is gone."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        self.sent += len(data)
        transport.write(data)

    async def drain(self) -> None:
        """Wait while the client reads slower than the answer is written (back-pressure)."""
        await self._drain_helper()

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.peername = transport.get_extra_info("peername")
        self.sockname = transport.get_extra_info("sockname")
        self.ssl_context = transport.get_extra_info("sslcontext")
        self._server.fronted.add(self)
        self._idle_since = self._server.loop.time()
        self._wait_idle()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        self._server.fronted.discard(self)
        if not self._closed.done():
            self._closed.set_result(None)
        self._stop_idle()
        task = self._task
        if task is not None and not task.done():
            # As aiohttp's handler_cancellation: the request's work stops with its client.
            task.cancel()
            request, self._unstarted = self._unstarted, None
            lane = self._server.lane
            if request is not None and lane is not None and isinstance(request, web.Request):
                lane.abandoned(request, self)

    def data_received(self, data: bytes) -> None:
        if (
            self._task is None
            and not self._buffer
            and data.find(b"\r\n\r\n") == len(data) - 4
            and len(data) >= 4
        ):
            # One whole head and nothing more, the common case: served without buffering.
            self._serve_head(data)
            return
        self._buffer += data
        if self._task is None:
            self._next()
        elif len(self._buffer) > _MAX_WAITING and not self._paused_reading:
            self._paused_reading = True
            cast(asyncio.Transport, self.transport).pause_reading()

    # the request loop

    def _next(self) -> None:
        """Between requests: serve each head that is here, or wait for more bytes."""
        buffer = self._buffer
        while True:
            searched = self._searched
            end = head_end(buffer, searched)
            if end < 0:
                # Only what arrived since the last look is searched: a head trickled in small
                # pieces costs one pass, not one per piece.
                self._searched = len(buffer)
                if (
                    len(buffer) > self._server.max_head_bytes
                    or b"\n\n" in buffer[max(0, searched - 1) :]
                ):
                    self._hand_over()  # aiohttp answers it (400, 431) as it always has
                return
            self._searched = 0
            head = bytes(buffer[:end])
            del buffer[:end]
            if not self._serve_head(head):
                return

    def _serve_head(self, head: bytes) -> bool:
        """Answer the request if the lane answers it at once, else start the task that will
        (the lane's awaiting rest, or the app), or hand the connection over if the request is
        not the front's. True while the next head may be served at once."""
        server = self._server
        message = None if len(head) > server.max_head_bytes else self._heads.parse(head)
        if message is None:
            self._buffer[:0] = head  # aiohttp gets every byte not yet answered
            self._hand_over()
            return False
        self.head_size = len(head)
        self.sent = 0
        request = server.request_factory(
            message,
            EMPTY_PAYLOAD,
            cast(RequestHandler, self),
            StreamWriter(self, server.loop),
            cast(Any, None),
        )
        lane = server.lane
        taken = (
            lane.take(request, self)
            if lane is not None and isinstance(request, web.Request)  # an app's request
            else None
        )
        if isinstance(taken, bool):
            return self._answered(taken and not message.should_close)
        work = functools.partial(self._through_the_app, request) if taken is None else taken
        self._unstarted = request
        self._task = server.loop.create_task(self._serve(work, message.should_close))
        return False

    async def _serve(
        self, work: Callable[[], Coroutine[Any, Any, bool]], should_close: bool
    ) -> None:
        # The work's coroutine is made here, not before the task: a task cancelled before its
        # first step (its client gone, the loop shutting down) leaves none never awaited.
        self._unstarted = None
        keep_alive = False
        try:
            keep_alive = await work() and not should_close
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("unhandled error answering a request")
        finally:
            self._task = None
        if self._answered(keep_alive) and self._buffer:
            self._next()

    def _answered(self, keep_alive: bool) -> bool:
        """After an answer: close, or go on reading (True)."""
        if not keep_alive or self._closing or self.transport is None:
            self.close()
            return False
        if self._paused_reading and len(self._buffer) <= _MAX_WAITING:
            self._paused_reading = False
            self.transport.resume_reading()
        self._idle_since = self._server.loop.time()
        if self._idle is None:
            self._wait_idle()
        return True

    async def _through_the_app(self, request: web.BaseRequest) -> bool:
        """The request as aiohttp would serve it: the app's handler, the response written by
        aiohttp's writer. Whether the connection may stay open."""
        try:
            response = await self._server.request_handler(request)
        except web.HTTPException as raised:  # redirects (the app turns errors into JSON)
            response = raised
        await response.prepare(request)
        await response.write_eof()
        return response.keep_alive is not False

    def _hand_over(self) -> None:
        """The rest of this connection is aiohttp's: its protocol gets the transport and every
        byte not yet answered."""
        transport = cast(asyncio.Transport, self.transport)
        self._server.fronted.discard(self)
        self._stop_idle()
        handler = self._server.hand_over()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        data, self._buffer = bytes(self._buffer), bytearray()
        self.transport = None
        if self._paused_reading:
            transport.resume_reading()
        if data:
            handler.data_received(data)

    # closing

    def close_idle(self) -> bool:
        """Close now if no request is being answered (shutdown); True if it was closed."""
        if not self._answering:
            self.close()
            return True
        self._closing = True
        return False

    @property
    def _answering(self) -> bool:
        # A task cancelled before its first step (by the loop shutting down) is done without
        # having run `_serve`'s `finally`: it answers nothing.
        task = self._task
        return task is not None and not task.done()

    async def closed(self) -> None:
        await asyncio.shield(self._closed)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close the connection once what was written has gone out."""
        self._stop_idle()
        if self.transport is not None:
            self.transport.close()

    def _wait_idle(self) -> None:
        # The next head must be complete within the idle timeout of the last answer (or of
        # the connection's start), or the connection closes. One timer, moved only when it
        # fires: an answer costs a clock reading, not a timer cancelled and made again.
        timeout = self._server.idle_timeout
        if timeout > 0:
            self._idle = self._server.loop.call_at(self._idle_since + timeout, self._idle_check)

    def _idle_check(self) -> None:
        self._idle = None
        loop = self._server.loop
        if self._answering:
            self._idle_since = loop.time()  # a request is being answered: not idle
        elif loop.time() - self._idle_since >= self._server.idle_timeout:
            self.close()
            return
        self._wait_idle()

    def _stop_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
