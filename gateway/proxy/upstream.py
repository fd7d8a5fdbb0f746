"""Forwarding: one pooled client session per upstream, streaming bodies both ways, WebSockets.

What is sent and returned is decided by `HeaderPolicy` (see gateway.forward_headers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping

import aiohttp
from aiohttp import web
from yarl import URL

from ..auth.bearer import WebSocketCredentials
from ..auth.tokens import Identity
from ..config import RouteConfig, UpstreamConfig
from ..errors import (
    BadGateway,
    GatewayError,
    GatewayTimeout,
    PayloadTooLarge,
    RequestTimeout,
    UpstreamFailure,
)
from ..request_keys import STARTED
from ..telemetry.metrics import GatewayMetrics
from .headers import HeaderPolicy
from .websocket import relay

__all__ = ["Proxy"]

log = logging.getLogger(__name__)
_CHUNK = 64 * 1024


class _ClientBody:
    """Streams a request body upstream, stopping it at the route's size limit (413) and when
    the client stalls for longer than the body timeout (408)."""

    def __init__(self, limit: int, timeout: float) -> None:
        self.limit = limit
        self.timeout = timeout
        self.failure: GatewayError | None = None

    def too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"Request body is larger than {self.limit} bytes")

    async def stream(self, request: web.Request) -> AsyncIterator[bytes]:
        received = 0
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    chunk = await request.content.readany()
            except TimeoutError:
                self.failure = RequestTimeout(
                    f"The request body stalled for more than {self.timeout:g}s"
                )
                raise self.failure from None
            if not chunk:
                return
            received += len(chunk)
            if self.limit and received > self.limit:
                self.failure = self.too_large()
                raise self.failure
            yield chunk


class _RelayedResponse(web.StreamResponse):
    """A response that sends the upstream's headers as they were: aiohttp would add a
    Content-Type to a body that has none, which changes what the client sees."""

    def __init__(self, *, status: int, reason: str | None, upstream_typed: bool) -> None:
        super().__init__(status=status, reason=reason)
        self._upstream_typed = upstream_typed

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        if not self._upstream_typed:
            self.headers.popall("Content-Type", None)


class Proxy:
    """Forwards a request to a route's upstream and streams the answer back."""

    def __init__(
        self,
        upstreams: Mapping[str, UpstreamConfig],
        headers: HeaderPolicy,
        metrics: GatewayMetrics | None = None,
        *,
        client_body_timeout: float = 30.0,
    ) -> None:
        self._upstreams = dict(upstreams)
        self._headers = headers
        self._metrics = metrics
        self._client_body_timeout = client_body_timeout
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    async def start(self) -> None:
        for name, upstream in self._upstreams.items():
            connector = aiohttp.TCPConnector(
                limit=upstream.max_connections, enable_cleanup_closed=True
            )
            self._sessions[name] = aiohttp.ClientSession(
                connector=connector,
                # Bodies pass through untouched: no decompression, no cookie jar shared
                # between users, no client headers the caller did not send.
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=upstream.connect_timeout,
                    sock_read=upstream.read_timeout,
                ),
            )

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()

    async def forward(
        self,
        request: web.Request,
        route: RouteConfig,
        path: str,
        identity: Identity | None,
        request_id: str,
    ) -> web.StreamResponse:
        upstream = self._upstreams[route.upstream]
        body = _ClientBody(route.max_body_bytes, self._client_body_timeout)
        if route.max_body_bytes and (request.content_length or 0) > route.max_body_bytes:
            raise body.too_large()
        data = body.stream(request) if request.body_exists else None
        url = _upstream_url(
            upstream.url, route.upstream_path(path), request.rel_url.raw_query_string
        )
        headers = self._headers.upstream_request(request, route, identity, request_id)
        sent = time.perf_counter()
        if self._metrics is not None and STARTED in request:
            self._metrics.own_work.observe(sent - request[STARTED])
        try:
            with upstream_errors(upstream):
                async with self._sessions[route.upstream].request(
                    request.method,
                    url,
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    auto_decompress=False,
                ) as upstream_response:
                    if self._metrics is not None:
                        self._metrics.upstream_latency.labels(upstream.name).observe(
                            time.perf_counter() - sent
                        )
                    return await self._relay(request, upstream_response, upstream)
        except UpstreamFailure as failure:
            # A body the client stalled or overfilled surfaces as a client error: it is the
            # client's failure, not the upstream's.
            if body.failure is not None:
                raise body.failure from None
            self._record(failure)
            raise

    async def forward_websocket(
        self,
        request: web.Request,
        route: RouteConfig,
        path: str,
        identity: Identity | None,
        request_id: str,
        credentials: WebSocketCredentials,
    ) -> web.StreamResponse:
        """Open the upstream WebSocket first, so a refusal is still an HTTP error, then relay."""
        upstream = self._upstreams[route.upstream]
        url = _upstream_url(upstream.url, route.upstream_path(path), credentials.raw_query)
        headers = self._headers.upstream_request(
            request, route, identity, request_id, websocket=True
        )
        try:
            with upstream_errors(upstream):
                upstream_ws = await self._sessions[route.upstream].ws_connect(
                    url,
                    headers=headers,
                    protocols=credentials.protocols,
                    autoclose=False,
                    autoping=True,
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
            await relay(client_ws, upstream_ws)
            return client_ws

    def _record(self, failure: UpstreamFailure) -> None:
        if failure.kind == "protocol":
            log.warning("upstream %s failed to answer: %s", failure.upstream, failure.__cause__)
        if self._metrics is not None:
            self._metrics.upstream_errors.labels(failure.upstream, failure.kind).inc()

    async def _relay(
        self,
        request: web.Request,
        upstream_response: aiohttp.ClientResponse,
        upstream: UpstreamConfig,
    ) -> web.StreamResponse:
        response = _RelayedResponse(
            status=upstream_response.status,
            reason=upstream_response.reason,
            upstream_typed="Content-Type" in upstream_response.headers,
        )
        self._headers.client_response(upstream_response.headers, response)
        await response.prepare(request)
        try:
            async for chunk in upstream_response.content.iter_chunked(_CHUNK):
                await response.write(chunk)
        except (TimeoutError, aiohttp.ClientError) as exc:
            # The status line is already sent: all we can do is cut the stream so the client
            # sees an incomplete body instead of a silently truncated one.
            log.warning(
                "upstream %s broke off its response body: %s", upstream.name, type(exc).__name__
            )
            self._record(BadGateway(upstream.name, "broken_body", "broke off"))
            if request.transport is not None:
                request.transport.close()
            return response
        except ConnectionResetError:
            # The client went away; leaving the block releases the upstream connection.
            return response
        await response.write_eof()
        return response


@contextlib.contextmanager
def upstream_errors(upstream: UpstreamConfig) -> Iterator[None]:
    """Translate the upstream client's failures into the gateway's errors: the one ladder for
    HTTP and WebSocket forwarding. Errors of the gateway's own (a client body too large or
    stalled) pass through untouched."""
    try:
        yield
    except aiohttp.WSServerHandshakeError as exc:
        raise BadGateway(
            upstream.name, "handshake", f"refused the WebSocket handshake ({exc.status})"
        ) from exc
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        raise BadGateway(upstream.name, "connect", "is unreachable") from exc
    except TimeoutError as exc:
        raise GatewayTimeout(
            upstream.name, "timeout", f"did not answer within {upstream.read_timeout:g}s"
        ) from exc
    except aiohttp.ClientError as exc:
        raise BadGateway(upstream.name, "protocol", "failed to answer") from exc


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
