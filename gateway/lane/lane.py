"""The lane: the requests that make up the gateway's load, answered by the front (gateway.front)
without the app's router, middleware or response objects. They go through the same policy
path, token check, route limits, upstream client, header policy, accounting and edge headers
as on the app's path; only what carries them differs (bytes instead of a `web.Response`).

It takes: a proxied request whose caller the Bearer path decides (a token, or none on a route
the cookie path would answer the same way), and forward auth's `/_gateway/auth` decided by a
token. It leaves to the app, untouched: the gateway's other endpoints, any path with a `%`
(aiohttp's router decodes it), CORS requests (their headers depend on the Origin), whatever
the session cookies decide. The front itself leaves bodies, upgrades, `Expect` and HTTP/1.0 to
aiohttp."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from ..auth.bearer import bearer_token
from ..config.endpoints import is_own_path
from ..edge import EdgePolicy
from ..errors import GatewayError
from ..forward_auth import Decisions
from ..front import FrontProtocol
from ..proxy.http1 import ResponseHead, UpstreamConnection
from ..proxy.policy import Permitted, RequestPolicy
from ..proxy.route_limits import RouteLimiter
from ..proxy.runtime import RuntimeHolder
from ..proxy.upstream import BROKEN_OFF, Proxy
from ..request_keys import MID_RESPONSE, PROGRESS, REQUEST_ID, ROUTE_NAME, UPSTREAM_NAME
from ..telemetry.accounting import CLIENT_CLOSED_REQUEST, RequestAccounting, how_far
from ..telemetry.redaction import loggable_path
from .answers import BODILESS_STATUSES, error_answer, head, no_body, permit_answer

__all__ = ["GatewayLane"]

log = logging.getLogger(__name__)

FORWARD_AUTH_PATH = "/_gateway/auth"
_INTERNAL_ERROR = GatewayError("Internal gateway error")
_LAST_CHUNK = b"0\r\n\r\n"


@dataclass(frozen=True, slots=True)
class GatewayLane:
    """Built by create_app with the same objects the app's handlers use."""

    edge: EdgePolicy
    accounting: RequestAccounting
    runtime: RuntimeHolder
    policy: RequestPolicy
    limiter: RouteLimiter
    decisions: Decisions

    async def serve(self, request: web.Request, connection: FrontProtocol) -> bool | None:
        raw_path = request.raw_path.partition("?")[0]
        if not self.edge.lane_takes(request) or "%" in raw_path:
            return None
        if raw_path == FORWARD_AUTH_PATH:
            return await self._decide(request, connection)
        if is_own_path(raw_path):
            return None
        return await self._forward(request, raw_path, connection)

    async def _decide(self, request: web.Request, connection: FrontProtocol) -> bool | None:
        if "Authorization" not in request.headers and self.policy.browser is not None:
            return None  # cookies may decide: the app's path

        async def permit() -> tuple[int, bool]:
            headers = await self.decisions.token_permit(request)
            # With Authorization the session cookies never decide (BrowserSessions.applies).
            assert headers is not None  # noqa: S101
            closing = self._closing(request)
            connection.write(permit_answer(headers, self._own(request), closing=closing))
            return 200, closing

        return await self._answer(request, connection, permit)

    async def _forward(
        self, request: web.Request, raw_path: str, connection: FrontProtocol
    ) -> bool | None:
        runtime = self.runtime.acquire()
        try:
            policy = self.policy
            refused: GatewayError | None = None
            try:
                path, route = policy.route(runtime.routes, raw_path, request.method)
            except GatewayError as exc:
                refused = exc
            else:
                browser = policy.browser
                if browser is not None and browser.decides(request, route):
                    return None

            async def forward() -> tuple[int, bool]:
                if refused is not None:
                    raise refused
                # After the edge's checks, as on the app's path (a 431 is `unmatched`).
                request[ROUTE_NAME] = route.name
                request[UPSTREAM_NAME] = route.upstream
                identity = await policy.identify(
                    request, route, path, lambda: bearer_token(request.headers)
                )
                await self.limiter.check(request, route, identity)
                permitted = Permitted(route, path, identity, request[REQUEST_ID])
                proxy = runtime.proxy
                relay = functools.partial(self._relay, proxy, connection)
                return await proxy.exchange(request, permitted, relay)

            return await self._answer(request, connection, forward)
        finally:
            self.runtime.release(runtime)

    async def _answer(
        self,
        request: web.Request,
        connection: FrontProtocol,
        work: Callable[[], Awaitable[tuple[int, bool]]],
    ) -> bool:
        """Count and log the request (as the middleware does), run the edge's checks, then
        `work`, which writes its answer: (status, closing). Refusals are answered here. Whether
        the connection may stay open."""
        started = self.accounting.begin(request)
        status, aborted = 500, None
        try:
            try:
                self.edge.admit(request)
                status, closing = await work()
            except GatewayError as refused:
                status, closing = self._refuse(request, connection, refused)
            return not closing
        except (ConnectionResetError, asyncio.CancelledError):
            status, aborted = CLIENT_CLOSED_REQUEST, how_far(request, connection.sent)
            raise
        except Exception as exc:
            status, closing = self._failed(request, connection, exc)
            return not closing
        finally:
            self.accounting.end(request, status, started, aborted)

    async def _relay(
        self,
        proxy: Proxy,
        connection: FrontProtocol,
        request: web.Request,
        upstream_connection: UpstreamConnection,
        response: ResponseHead,
        headers: CIMultiDict[str],
        upstream: str,
    ) -> tuple[int, bool]:
        """The upstream's answer to the client: in one write when it is all here, else its
        head and then its body as it comes, with back-pressure. (status, closing)."""
        closing = self._closing(request)
        status, method = response.status, request.method
        bodiless = no_body(status, method)
        complete = upstream_connection.complete
        body = upstream_connection.take_body() if complete else b""
        if bodiless:
            # A HEAD answer keeps the upstream's length; 1xx, 204 and 304 carry none.
            if status in BODILESS_STATUSES:
                headers.popall("Content-Length", None)
            framing, chunked = b"", False
        elif complete:
            headers.popall("Content-Length", None)
            framing, chunked = b"Content-Length: %d\r\n" % len(body), False
        else:
            # Streamed: with the upstream's own length when it gave one, else in chunks.
            chunked = "Content-Length" not in headers
            framing = b"Transfer-Encoding: chunked\r\n" if chunked else b""
        for name in self.edge.replaced_upstream_headers(request):
            headers.popall(name, None)
        lines = framing + self.edge.head_lines(request, own=False)
        answer = head(status, response.reason, headers.items(), lines, closing=closing)
        if complete:
            connection.write(answer if bodiless else answer + body)
            return status, closing
        connection.write(answer)
        request[PROGRESS] = MID_RESPONSE
        try:
            while piece := await upstream_connection.read_body():
                connection.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
                await connection.drain()
            if chunked:
                connection.write(_LAST_CHUNK)
        except BROKEN_OFF as exc:
            proxy.broke_off(request, upstream, exc)
            return status, True
        return status, closing

    def _closing(self, request: web.Request) -> bool:
        """Whether the connection ends after this answer (said in it: `Connection: close`)."""
        return not request.keep_alive or self.edge.draining

    def _refuse(
        self, request: web.Request, connection: FrontProtocol, refused: GatewayError
    ) -> tuple[int, bool]:
        closing = refused.closes_connection or self._closing(request)
        answer = error_answer(refused, self._own(request), method=request.method, closing=closing)
        connection.write(answer)
        return refused.status, closing

    def _failed(
        self, request: web.Request, connection: FrontProtocol, exc: Exception
    ) -> tuple[int, bool]:
        # Logged without the query string: it may hold a token.
        log.error("unhandled error for %s %s", request.method, loggable_path(request), exc_info=exc)
        if connection.sent:
            connection.close()  # part of an answer is out: cut it rather than add to it
            return 500, True
        return self._refuse(request, connection, _INTERNAL_ERROR)

    def _own(self, request: web.Request) -> bytes:
        return self.edge.head_lines(request, own=True)
