"""One HTTP/1.1 connection to an upstream, made for proxying: an asyncio protocol that writes a
request head prepared by the caller, parses the response with llhttp (through httptools), and
hands the body over with back-pressure both ways.

Why httptools rather than aiohttp's own C parser: its API is public and stable, it is
callback-driven (body pieces go straight to the relay, with our own flow control, instead of
through a StreamReader per response), and a parser costs a microsecond to make, so each exchange
gets a fresh one and no state leaks between responses.

Framing rules, each tested against a raw-socket upstream (tests/proxy/test_upstream_framing.py):
- 1xx before the final status are skipped; a 101 to a request that asked for no upgrade fails.
- HEAD, 204 and 304 have no body, whatever their headers say.
- Chunked bodies are decoded (trailers are dropped); close-delimited bodies end at EOF.
- Both Content-Length and Transfer-Encoding, or a bad length: a protocol error (llhttp refuses).
- Bytes arriving while no request is in flight (a second, unsolicited response) discard the
  connection: it is never reused, so no response can reach the wrong client.
- A connection is reusable only after its response ended cleanly, its request was sent whole,
  and neither side said `Connection: close`.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from typing import Final, cast

import httptools

__all__ = [
    "ConnectionLost",
    "ResponseHead",
    "UpstreamConnection",
    "UpstreamProtocolError",
    "UpstreamTimeout",
    "Watchdog",
]

# Response heads larger than this are refused (aiohttp's client allowed 8 KiB lines; a few
# dozen headers of that size is far beyond any honest upstream).
MAX_HEAD_BYTES: Final = 64 * 1024
# Body pieces buffered before the upstream socket stops being read.
_HIGH_WATER: Final = 256 * 1024
_LOW_WATER: Final = 64 * 1024


class UpstreamProtocolError(Exception):
    """The upstream sent something that is not a valid HTTP/1.1 response to our request."""


class ConnectionLost(Exception):
    """The connection closed or reset before the response was complete."""

    def __init__(self, message: str, *, response_started: bool) -> None:
        super().__init__(message)
        # Whether any byte of a response had arrived (a retry is safe only if not).
        self.response_started = response_started


class UpstreamTimeout(Exception):
    """No response head, or no next body piece, within the upstream's timeout."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """Status, reason and raw header pairs of a final response, and how its body is framed."""

    status: int
    reason: str
    headers: list[tuple[bytes, bytes]]
    # None: chunked or close-delimited (unknown length).
    content_length: int | None


class UpstreamConnection(asyncio.Protocol):
    """A pooled connection: one exchange at a time, driven by `send` and `read_*`."""

    # The current exchange (reset by each `send`).
    _parser: httptools.HttpResponseParser | None
    _headers: list[tuple[bytes, bytes]]
    _reason: str
    _head: ResponseHead | None
    _head_bytes: int
    _pieces: collections.deque[bytes]
    _buffered: int
    _reading_paused: bool
    _complete: bool
    _keep_alive: bool
    _close_delimited: bool
    _request_complete: bool
    _received_any: bool
    _no_body: bool
    _upgrade_expected: bool
    _failure: Exception | None
    _head_waiter: asyncio.Future[None] | None
    _body_waiter: asyncio.Future[None] | None
    _last_activity: float

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, watchdog: Watchdog) -> None:
        self._loop = loop
        self._timeout = timeout
        self._watchdog = watchdog
        self.transport: asyncio.Transport | None = None
        self.closed = False
        # Set when the connection must not be reused: unsolicited bytes, a close, an error.
        self.broken = False
        self.idle_since = time.monotonic()
        self._write_paused = False
        self._write_resumed: asyncio.Future[None] | None = None
        self._reset_exchange(None)

    # --- the exchange, as the proxy drives it ---------------------------------------------

    def send(self, head: bytes, *, method: str, upgrade: bool = False) -> None:
        """Start an exchange: write the request head (and a small body with it)."""
        self._reset_exchange(httptools.HttpResponseParser(self))
        self._no_body = method == "HEAD"
        self._upgrade_expected = upgrade
        assert self.transport is not None  # noqa: S101 - only pooled, connected ones are used
        self.transport.write(head)
        self._watch()

    def write_body(self, data: bytes) -> None:
        assert self.transport is not None  # noqa: S101
        # The upstream is not late while the client is still sending.
        self._last_activity = self._loop.time()
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the upstream socket's send buffer is full (request-body back-pressure)."""
        if self._failure is not None:
            raise self._failure
        if self._write_paused:
            self._write_resumed = self._loop.create_future()
            await self._write_resumed

    def body_sent(self) -> None:
        """The whole request was written: the connection may be reused after the response."""
        self._request_complete = True

    async def read_head(self) -> ResponseHead:
        """The final response head; for a small body of known length, the body is read too."""
        if self._head is None and self._failure is None:
            self._head_waiter = self._loop.create_future()
            try:
                await self._head_waiter
            finally:
                self._head_waiter = None
        if self._failure is not None:
            raise self._failure
        assert self._head is not None  # noqa: S101
        return self._head

    @property
    def complete(self) -> bool:
        """The response has ended (its whole body has been received)."""
        return self._complete

    def take_body(self) -> bytes:
        """Everything received of the body so far, in one piece (for small responses)."""
        pieces, self._pieces = self._pieces, collections.deque()
        self._buffered = 0
        return b"".join(pieces)

    async def read_body(self) -> bytes:
        """The next piece of the body; b"" when it has ended."""
        while not self._pieces:
            if self._failure is not None:
                raise self._failure
            if self._complete:
                return b""
            self._body_waiter = self._loop.create_future()
            try:
                await self._body_waiter
            finally:
                self._body_waiter = None
        piece = self._pieces.popleft()
        self._buffered -= len(piece)
        if self._reading_paused and self._buffered <= _LOW_WATER and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return piece

    def reusable(self) -> bool:
        """Whether the connection can go back to the pool now."""
        return (
            self._complete
            and self._request_complete
            and self._keep_alive
            and not self.broken
            and not self.closed
        )

    def finish(self) -> None:
        """End the exchange: whatever arrives from now until the next send is unsolicited."""
        self._unwatch()
        self._parser = None
        self.idle_since = time.monotonic()

    def abort(self, failure: Exception) -> None:
        """End the exchange with `failure` (e.g. the client's body failed): readers get it."""
        self._fail(failure)

    def close(self) -> None:
        self.broken = True
        self._unwatch()
        if self.transport is not None and not self.closed:
            self.transport.close()

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or self._complete:
            # Nothing was asked: an upstream writing on its own would shift every later
            # response by one, across users. Drop the connection instead (as nginx does).
            self.close()
            return
        self._received_any = True
        self._last_activity = self._loop.time()
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if not self._upgrade_expected:
                self._fail(UpstreamProtocolError("101 Switching Protocols to a plain request"))
        except httptools.HttpParserError as exc:
            if self._failure is None:
                self._fail(UpstreamProtocolError(f"invalid response: {exc}"))
            return
        if self._head is None:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(UpstreamProtocolError("response head is too large"))

    def eof_received(self) -> bool:
        if self._parser is not None and not self._complete:
            if self._head is not None and self._close_delimited:
                self._message_done(keep_alive=False)
            else:
                self._fail(self._lost("closed the connection"))
        self.broken = True
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.broken = True
        self._unwatch()
        if self._parser is not None and not self._complete:
            self._fail(self._lost("reset the connection" if exc else "closed the connection"))
        if self._write_resumed is not None and not self._write_resumed.done():
            self._write_resumed.set_exception(self._failure or self._lost("closed"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._write_resumed is not None and not self._write_resumed.done():
            self._write_resumed.set_result(None)

    # --- httptools callbacks -------------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        if self._complete:  # a second response after ours, in the same read
            self.close()
            return
        self._reason = status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head is None:  # after the head: chunked trailers, which are dropped
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None  # noqa: S101
        if self._complete:
            self.close()
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._headers, self._reason = [], ""  # informational: wait for the final one
            return
        length: int | None = None
        chunked = False
        for name, value in self._headers:
            lower = name.lower()
            if lower == b"content-length":
                length = int(value)  # llhttp has checked it is one valid number
            elif lower == b"transfer-encoding":
                chunked = True
        bodiless = self._no_body or status in (204, 304)
        self._close_delimited = not bodiless and length is None and not chunked
        self._head = ResponseHead(status, self._reason, self._headers, 0 if bodiless else length)
        if bodiless:
            # llhttp would wait for a HEAD response's announced body: end it here, and treat
            # any byte that follows as unsolicited.
            self._message_done(keep_alive=self._parser.should_keep_alive())
        elif length is None or length > SMALL_BODY:
            self._wake_head()
        # A small body of known length: the head is handed over with the whole body.

    def on_body(self, body: bytes) -> None:
        if self._complete:  # bytes after a bodiless response
            self.close()
            return
        self._pieces.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        if self._body_waiter is not None and not self._body_waiter.done():
            self._body_waiter.set_result(None)

    def on_message_complete(self) -> None:
        if self._head is None or self._complete:
            return  # the end of a 1xx (or of a bodiless response ended already)
        assert self._parser is not None  # noqa: S101
        self._message_done(keep_alive=self._parser.should_keep_alive())

    # --- internals -----------------------------------------------------------------------------

    def _reset_exchange(self, parser: httptools.HttpResponseParser | None) -> None:
        self._parser = parser
        self._headers = []
        self._reason = ""
        self._head = None
        self._head_bytes = 0
        self._pieces = collections.deque()
        self._buffered = 0
        self._reading_paused = False
        self._complete = False
        self._keep_alive = False
        self._close_delimited = False
        self._request_complete = False
        self._received_any = False
        self._no_body = False
        self._upgrade_expected = False
        self._failure = None
        self._head_waiter = None
        self._body_waiter = None
        self._last_activity = 0.0

    def _message_done(self, *, keep_alive: bool) -> None:
        self._complete = True
        self._keep_alive = keep_alive
        self._unwatch()
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        self._wake_head()
        if self._body_waiter is not None and not self._body_waiter.done():
            self._body_waiter.set_result(None)

    def _wake_head(self) -> None:
        if self._head_waiter is not None and not self._head_waiter.done():
            self._head_waiter.set_result(None)

    def _lost(self, what: str) -> ConnectionLost:
        return ConnectionLost(f"upstream {what}", response_started=self._received_any)

    def _fail(self, failure: Exception) -> None:
        self._failure = failure
        self.close()
        for waiter in (self._head_waiter, self._body_waiter, self._write_resumed):
            if waiter is not None and not waiter.done():
                waiter.set_exception(failure)

    def _watch(self) -> None:
        self._last_activity = self._loop.time()
        self._watchdog.watch(self)

    def check_timeout(self, now: float) -> None:
        """Called by the watchdog: fail the exchange if the upstream has been silent too long."""
        if self._complete or self._parser is None:
            self._watchdog.unwatch(self)
            return
        # Not the upstream's delay: its socket is unread while a slow client drains the body,
        # or full while the request body is sent.
        if self._write_paused or self._reading_paused:
            self._last_activity = now
        elif now >= self._last_activity + self._timeout:
            self._fail(UpstreamTimeout(f"no answer within {self._timeout:g}s"))

    def _unwatch(self) -> None:
        self._watchdog.unwatch(self)


class Watchdog:
    """One timer for every exchange of a pool instead of one per request (a timer per request
    costs more than the rest of the exchange's bookkeeping). Timeouts fire between the timeout
    and the timeout plus one tick."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._tick = min(1.0, max(0.05, timeout / 4))
        self._watched: set[UpstreamConnection] = set()
        self._handle: asyncio.TimerHandle | None = None

    def watch(self, connection: UpstreamConnection) -> None:
        self._watched.add(connection)
        if self._handle is None:
            self._handle = self._loop.call_later(self._tick, self._check)

    def unwatch(self, connection: UpstreamConnection) -> None:
        self._watched.discard(connection)

    def _check(self) -> None:
        now = self._loop.time()
        for connection in list(self._watched):
            connection.check_timeout(now)
        self._handle = self._loop.call_later(self._tick, self._check) if self._watched else None


# Responses with a known length up to this are read whole and answered in one write.
SMALL_BODY: Final = 64 * 1024
