"""Forwarding: a target of the route's upstream picked per request (proxy/targets.py), safe
retries on another target, bodies streamed both ways, WebSockets.

What is sent and returned is decided by `HeaderPolicy` (see gateway.forward_headers).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import aiohttp
from aiohttp import web
from yarl import URL

from ..auth.bearer import WebSocketCredentials
from ..config import UpstreamConfig
from ..draining import Drain
from ..errors import (
    BadGateway,
    UpstreamFailure,
    UpstreamUnavailable,
)
from ..request_keys import MID_RESPONSE, PROGRESS, STARTED, UPSTREAM_WAIT, noted
from ..telemetry.metrics import GatewayMetrics
from .bodies import ClientBody, send_body
from .failures import upstream_errors, upstream_failure
from .headers import HeaderPolicy
from .http1 import (
    ConnectionLost,
    ResponseHead,
    UpstreamConnection,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from .policy import Permitted
from .pool import ConnectFailed, TlsFailed
from .retries import resendable, retry_target
from .targets import Target, Targets
from .websocket import SocketSessions

__all__ = ["BROKEN_OFF", "Proxy"]

R = TypeVar("R")
# What answers the client once the upstream's response head is in: (the request, the upstream
# connection to read the body from, the head, the headers that may reach the client, the
# upstream's name).
Relay = Callable[
    [web.Request, UpstreamConnection, ResponseHead, list[tuple[bytes, bytes]], str], Awaitable[R]
]
# How an upstream can fail once its response is under way.
BROKEN_OFF = (UpstreamTimeout, ConnectionLost, UpstreamProtocolError)

log = logging.getLogger(__name__)


class _RelayedHeaders:
    """Sends the upstream's headers as they were: aiohttp would add a Content-Type to a body
    that has none, which changes what the client sees."""

    _upstream_typed = True
    # The edge adds X-Content-Type-Options only to the gateway's own answers.
    from_upstream = True

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()  # type: ignore[misc]
        if not self._upstream_typed:
            self.headers.popall("Content-Type", None)  # type: ignore[attr-defined]


class _RelayedResponse(_RelayedHeaders, web.StreamResponse):
    """A streamed relay of an upstream response."""


class _RelayedBody(_RelayedHeaders, web.Response):
    """A small upstream response, answered with its head and body in one write."""


_CHUNKED = b"Transfer-Encoding: chunked\r\n"


class Proxy:
    """Forwards a request to a target of its route's upstream and streams the answer back."""

    def __init__(
        self,
        upstreams: Mapping[str, UpstreamConfig],
        headers: HeaderPolicy,
        metrics: GatewayMetrics,
        *,
        client_body_timeout: float = 30.0,
    ) -> None:
        self._upstreams = dict(upstreams)
        self._headers = headers
        self._metrics = metrics
        self._client_body_timeout = client_body_timeout
        self._targets: dict[str, Targets] = {}
        # The WebSocket handshake and relay keep using aiohttp's client.
        self._websocket_sessions: dict[str, aiohttp.ClientSession] = {}
        self._server_names = {n: u.tls.server_name or None for n, u in self._upstreams.items()}

    async def start(self) -> None:
        for name, upstream in self._upstreams.items():
            self._targets[name] = targets = Targets(upstream, self._metrics)
            targets.start()
            self._websocket_sessions[name] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=upstream.max_connections,
                    # The same verification as the HTTP pool (True: aiohttp's default).
                    ssl=upstream.tls.context or True,
                ),
                # No cookie jar shared between users, no headers the caller did not send.
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=upstream.connect_timeout, sock_read=upstream.read_timeout
                ),
            )

    async def close(self) -> None:
        targets, self._targets = self._targets, {}
        for pool in targets.values():
            await pool.close()
        sessions, self._websocket_sessions = self._websocket_sessions, {}
        for session in sessions.values():
            await session.close()

    def targets(self, upstream: str) -> Targets:
        """The targets of an upstream (for health and tests)."""
        return self._targets[upstream]

    async def forward(self, request: web.Request, permitted: Permitted) -> web.StreamResponse:
        """The exchange, its answer relayed as an aiohttp response."""
        return await self.exchange(request, permitted, self._relay)

    async def exchange(self, request: web.Request, permitted: Permitted, relay: Relay[R]) -> R:
        """Send the request upstream (a target of its route's upstream, another one when that
        failed safely) and hand the response to `relay`; failures become 502/503/504."""
        route, path = permitted.route, permitted.path
        body, chunked = None, False
        if request.body_exists:
            body = ClientBody(route.max_body_bytes, self._client_body_timeout)
            length = request.content_length
            if route.max_body_bytes and (length or 0) > route.max_body_bytes:
                raise body.too_large()
            # A chunked client body is sent on chunked; one with a length keeps its length.
            chunked = length is None
        query = request.rel_url.raw_query_string
        target_path = route.upstream_path(path) + ("?" + query if query else "")
        extra = _CHUNKED if chunked else b""

        def head_for(target: Target) -> bytes:
            request_line = f"{request.method} {target.prefix}{target_path} HTTP/1.1\r\n"
            return self._headers.upstream_head(
                request,
                route,
                permitted.identity,
                permitted.request_id,
                request_line=request_line.encode("utf-8", "surrogateescape"),
                host=target.host,
                extra=extra,
            )

        notes = noted(request)
        notes[PROGRESS] = UPSTREAM_WAIT
        sent = time.perf_counter()
        started = notes.get(STARTED)
        if started is not None:
            self._metrics.own_work.observe(sent - started)
        # The translation inline, not `with upstream_errors(...)`: a generator context manager
        # cost ~3 us of every proxied request on a loaded machine (py-spy).
        try:
            return await self._exchange(
                request,
                self._targets[route.upstream],
                head_for,
                body,
                chunked,
                sent,
                relay,
            )
        except UpstreamFailure as failure:
            self._record(failure)
            raise
        except Exception as exc:
            translated = upstream_failure(self._upstreams[route.upstream], exc)
            if translated is None:
                raise
            translated.__cause__ = exc  # what _record logs
            self._record(translated)
            raise translated from exc

    async def _exchange(
        self,
        request: web.Request,
        targets: Targets,
        head_for: Callable[[Target], bytes],
        body: ClientBody | None,
        chunked: bool,
        sent: float,
        relay: Relay[R],
    ) -> R:
        """Send the request to a target, and to another when that failed safely (see
        _retry_target); the last failure is raised for upstream_errors to translate."""
        targets.budget.earn()
        tried: list[Target] = []
        retries_left = targets.upstream.retries
        stale_retried = False
        target = targets.pick()
        head, head_target = b"", None
        while True:
            if target is None:
                raise targets.unavailable()
            refusal = targets.breaker.refusal(target)
            if refusal is not None:
                target.refused_by_breaker()
                raise UpstreamUnavailable(
                    targets.upstream.name, "breaker", f"target {target} {refusal}", retry_after=1
                )
            if head_target is not target:  # its host and path prefix are in the head
                head, head_target = head_for(target), target
            probe = target.begin()
            failure: Exception
            try:
                try:
                    connection, reused = await target.pool.acquire()
                except ConnectFailed as exc:
                    kind = (
                        "tls"
                        if isinstance(exc, TlsFailed)
                        else "connect"
                        if exc.refused
                        else "busy"
                    )
                    target.failed(kind, probe, refused=exc.refused)
                    failure, unsent = exc, True
                else:
                    try:
                        return await self._attempt(
                            request, target, connection, head, body, chunked, sent, probe, relay
                        )
                    except ConnectionLost as lost:
                        if lost.response_started:
                            target.failed("protocol", probe)
                            raise
                        if reused and not stale_retried and resendable(request, body):
                            # A kept-alive connection the upstream closed just as it was
                            # reused: once more, on a fresh one, and not the target's failure.
                            stale_retried = True
                            continue
                        target.failed("reset", probe)
                        failure, unsent = lost, False
                    except UpstreamTimeout:
                        target.failed("timeout", probe)
                        raise
                    except UpstreamProtocolError:
                        target.failed("protocol", probe)
                        raise
            finally:
                target.end(probe)
            tried.append(target)
            target = retry_target(request, targets, tried, body, unsent, retries_left)
            if target is None:
                if unsent and targets.pick() is None:
                    # Every target is down now: say so, and when to come back.
                    raise targets.unavailable() from failure
                raise failure
            retries_left -= 1
            targets.retried()

    async def _attempt(
        self,
        request: web.Request,
        target: Target,
        connection: UpstreamConnection,
        head: bytes,
        body: ClientBody | None,
        chunked: bool,
        sent: float,
        probe: bool,
        relay: Relay[R],
    ) -> R:
        """One exchange on one connection: send, read the head, relay the response."""
        sender: asyncio.Task[None] | None = None
        upstream = target.upstream
        try:
            connection.send(head, method=request.method)
            if body is None:
                connection.body_sent()
            else:
                sender = asyncio.create_task(
                    send_body(connection, request, body, chunked), name="request-body"
                )
            response_head = await connection.read_head()
            target.succeeded(probe)
            self._metrics.upstream_latency.labels(upstream).observe(time.perf_counter() - sent)
            headers = self._headers.client_headers(response_head.headers)
            return await relay(request, connection, response_head, headers, upstream)
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
            target.pool.release(connection)

    async def forward_websocket(
        self,
        request: web.Request,
        permitted: Permitted,
        credentials: WebSocketCredentials,
        drain: Drain,
        sockets: SocketSessions,
    ) -> web.StreamResponse:
        """Open the upstream WebSocket first, so a refusal is still an HTTP error, then relay
        until either side closes, the socket's session ends, or the gateway drains (then both
        are told 1001, going away)."""
        route, path, identity = permitted.route, permitted.path, permitted.identity
        upstream = self._upstreams[route.upstream]
        targets = self._targets[route.upstream]
        headers = self._headers.upstream_request(
            request, route, identity, permitted.request_id, websocket=True
        )
        request[PROGRESS] = UPSTREAM_WAIT
        try:
            with upstream_errors(upstream):
                target = targets.pick()
                if target is None:
                    raise targets.unavailable()
                url = _upstream_url(target.url, route.upstream_path(path), credentials.raw_query)
                upstream_ws = await self._websocket_sessions[route.upstream].ws_connect(
                    url,
                    headers=headers,
                    protocols=credentials.protocols,
                    autoclose=False,
                    autoping=True,
                    server_hostname=self._server_names[route.upstream],
                )
        except UpstreamFailure as failure:
            self._record(failure)
            raise
        async with upstream_ws:
            chosen = upstream_ws.protocol or credentials.auth_protocol
            client_ws = web.WebSocketResponse(
                protocols=(chosen,) if chosen else (), autoclose=False, autoping=True
            )
            await client_ws.prepare(request)
            going_away = functools.partial(
                client_ws.close, code=aiohttp.WSCloseCode.GOING_AWAY, message=b"restarting"
            )
            with drain.until_drained(going_away):
                await sockets.relay(client_ws, upstream_ws, identity, route.roles)
            return client_ws

    def _record(self, failure: UpstreamFailure) -> None:
        if failure.kind in ("protocol", "broken_body", "tls"):
            log.warning("%s: %s", failure.message, failure.__cause__)
        self._metrics.upstream_errors.labels(failure.upstream, failure.kind).inc()

    def broke_off(self, request: web.Request, upstream: str, exc: Exception) -> None:
        """An upstream broke off a response whose status line is already sent: all that can be
        done is cut the client's stream, so it sees an incomplete body instead of a silently
        truncated one."""
        failure = BadGateway(upstream, "broken_body", "broke off its response body")
        failure.__cause__ = exc
        self._record(failure)
        if request.transport is not None:
            request.transport.close()

    async def _relay(
        self,
        request: web.Request,
        connection: UpstreamConnection,
        head: ResponseHead,
        kept: list[tuple[bytes, bytes]],
        upstream: str,
    ) -> web.StreamResponse:
        headers = self._headers.decoded(kept)
        typed = "Content-Type" in headers
        if connection.complete:
            # Small, or bodiless: the whole answer in one write.
            small = _RelayedBody(
                status=head.status, reason=head.reason, headers=headers, body=connection.take_body()
            )
            small._upstream_typed = typed
            return small
        response = _RelayedResponse(status=head.status, reason=head.reason, headers=headers)
        response._upstream_typed = typed
        try:
            await response.prepare(request)
            request[PROGRESS] = MID_RESPONSE
            while piece := await connection.read_body():
                await response.write(piece)
            await response.write_eof()
        except BROKEN_OFF as exc:
            self.broke_off(request, upstream, exc)
        except ConnectionResetError:
            # The client went away (aiohttp's error is also a ClientError, which would read as
            # the upstream's failure): the middleware records a 499, and the unfinished
            # upstream connection is closed on release.
            raise ConnectionResetError("the client closed the connection") from None
        return response


def _upstream_url(base: URL, path: str, raw_query: str) -> URL:
    """The upstream's base URL (which may carry a path prefix) + the path to forward + the
    client's query string exactly as sent."""
    return URL.build(
        scheme=base.scheme,
        host=base.raw_host or "",
        port=base.explicit_port,
        path=base.raw_path.rstrip("/") + path,
        query_string=raw_query,
        encoded=True,
    )
