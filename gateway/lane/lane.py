"""The lane: the requests that make up the gateway's load, answered by the front (gateway.front)
without the app's router, middleware or response objects. They go through the same policy
path, token check, route limits, upstream client, header policy, accounting and edge headers
as on the app's path; only what carries them differs (bytes instead of a `web.Response`).

It takes: a proxied request whose caller the Bearer path decides (a token, or none on a route
the cookie path would answer the same way), and forward auth's `/_gateway/auth` decided by a
token. It leaves to the app, untouched: the gateway's other endpoints, any path with a `%`
(aiohttp's router decodes it), CORS requests (their headers depend on the Origin), whatever
the session cookies decide. The front itself leaves bodies, upgrades, `Expect` and HTTP/1.0 to
aiohttp.

What needs no await is answered inside the front's read callback (a refusal, a decision by
token): no task, coroutine or loop turn for it. The upstream exchange, and a route limit kept
in Redis, are the rest the front awaits in a task; that task takes its hold on the routes and
pools, and finds the route again if a reload retired them since."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..auth.bearer import bearer_token
from ..config import RouteConfig
from ..config.endpoints import is_own_path
from ..edge import EdgePolicy
from ..errors import GatewayError
from ..forward_auth import Decisions
from ..front import FrontProtocol
from ..proxy.http1 import ResponseHead, UpstreamConnection
from ..proxy.policy import Permitted, RequestPolicy
from ..proxy.route_limits import RouteLimiter
from ..proxy.runtime import Runtime, RuntimeHolder
from ..proxy.upstream import BROKEN_OFF, Proxy
from ..request_keys import (
    MID_RESPONSE,
    PROGRESS,
    REQUEST_ID,
    ROUTE_NAME,
    STARTED,
    UPSTREAM_NAME,
    learned,
    noted,
)
from ..telemetry.accounting import CLIENT_CLOSED_REQUEST, RequestAccounting, how_far
from ..telemetry.redaction import loggable_path
from .answers import BODILESS_STATUSES, error_answer, no_body, permit_answer, relayed_head

__all__ = ["GatewayLane"]

log = logging.getLogger(__name__)

FORWARD_AUTH_PATH = "/_gateway/auth"
_INTERNAL_ERROR = GatewayError("Internal gateway error")
_LAST_CHUNK = b"0\r\n\r\n"
# Upstream headers the relay writes its own of (lower case).
_NOTHING: frozenset[bytes] = frozenset()
_LENGTH = frozenset({b"content-length"})


# What `take` gives the front: None (the app's), whether the connection may stay open after an
# answer already written, or the rest of the work, which must await (the front runs it).
Taken = bool | Callable[[], Coroutine[Any, Any, bool]] | None
# What a piece of the lane's work gives `_answer`: (status, closing) when it has written its
# answer, or what is left to await for it.
Worked = tuple[int, bool] | Callable[[], Awaitable[tuple[int, bool]]]


@dataclass(frozen=True, slots=True)
class GatewayLane:
    """Built by create_app with the same objects the app's handlers use."""

    edge: EdgePolicy
    accounting: RequestAccounting
    runtime: RuntimeHolder
    policy: RequestPolicy
    limiter: RouteLimiter
    decisions: Decisions

    def take(self, request: web.Request, connection: FrontProtocol) -> Taken:
        """Answer the request now if nothing needs awaiting (refusals, most decisions), or
        say what is left to await (forwarding); None, having done nothing, for the app."""
        raw_path = request.raw_path.partition("?")[0]
        if not self.edge.lane_takes(request) or "%" in raw_path:
            return None
        if raw_path == FORWARD_AUTH_PATH:
            if "Authorization" not in request.headers and self.policy.browser is not None:
                return None  # cookies may decide: the app's path
            return self._answer(
                request, connection, functools.partial(self._decide, request, connection)
            )
        if is_own_path(raw_path):
            return None
        runtime = self.runtime.current
        try:
            path, route = self.policy.route(runtime.routes, raw_path, request.method)
        except GatewayError as refused:
            return self._answer(request, connection, functools.partial(_raise, refused))
        browser = self.policy.browser
        if browser is not None and browser.decides(request, route):
            return None
        forward = functools.partial(self._forward, request, runtime, route, path, connection)
        return self._answer(request, connection, forward)

    def abandoned(self, request: web.Request, connection: FrontProtocol) -> None:
        """Its client went away before anything was done for it: a 499 before the upstream,
        logged and counted like any other (under its route, for the lane's own requests)."""
        started = learned(request).get(STARTED)
        if started is None:  # the app's request, which its middleware never saw
            self.edge.name(request)
            started = self.accounting.started(request)
        self.accounting.answered(
            request, CLIENT_CLOSED_REQUEST, started, how_far(request, connection.sent)
        )

    def _decide(self, request: web.Request, connection: FrontProtocol) -> Worked:
        decisions = self.decisions
        decision = decisions.by_token_now(request)
        if decision.route.rate_limit is None:
            return self._permit(request, connection, decisions.permit(decision))

        async def limited() -> tuple[int, bool]:
            await decisions.limit(request, decision)
            return self._permit(request, connection, decisions.permit(decision))

        return limited

    def _permit(
        self, request: web.Request, connection: FrontProtocol, headers: dict[str, str]
    ) -> tuple[int, bool]:
        closing = self._closing(request)
        connection.write(permit_answer(headers, self._own(request), closing=closing))
        return 200, closing

    def _forward(
        self,
        request: web.Request,
        runtime: Runtime,
        route: RouteConfig,
        path: str,
        connection: FrontProtocol,
    ) -> Worked:
        permitted = self._permitted(request, route, path)
        return functools.partial(self._exchange, request, runtime, permitted, connection)

    async def _exchange(
        self,
        request: web.Request,
        runtime: Runtime,
        permitted: Permitted,
        connection: FrontProtocol,
    ) -> tuple[int, bool]:
        holder = self.runtime
        reloaded = not holder.hold(runtime)
        if reloaded:
            runtime = holder.acquire()
        try:
            if reloaded:  # since the route was found: the new routes decide
                path, route = self.policy.route(
                    runtime.routes, request.raw_path.partition("?")[0], request.method
                )
                permitted = self._permitted(request, route, path)
            await self.limiter.check(request, permitted.route, permitted.identity)
            proxy = runtime.proxy
            relay = functools.partial(self._relay, proxy, connection)
            return await proxy.exchange(request, permitted, relay)
        finally:
            holder.release(runtime)

    def _permitted(self, request: web.Request, route: RouteConfig, path: str) -> Permitted:
        """Named after its route (after the edge's checks, as on the app's path: a 431 is
        `unmatched`), and let through by the Bearer path, or refused."""
        notes = noted(request)
        notes[ROUTE_NAME], notes[UPSTREAM_NAME] = route.name, route.upstream
        identity = self.policy.identify_by_token(
            request, route, lambda: bearer_token(request.headers)
        )
        return Permitted(route, path, identity, request[REQUEST_ID])

    def _answer(
        self, request: web.Request, connection: FrontProtocol, work: Callable[[], Worked]
    ) -> bool | Callable[[], Coroutine[Any, Any, bool]]:
        """Count and log the request (as the middleware does), run the edge's checks, then
        `work`, which writes its answer or says what is left to await for it. Refusals are
        answered here. Whether the connection may stay open, or what the front must await."""
        started = self.accounting.started(request)
        aborted = None
        try:
            self.edge.name(request)
            self.edge.check_header_block(request, connection.head_size)
            worked = work()
            if not isinstance(worked, tuple):
                return functools.partial(self._later, request, connection, started, worked)
            status, closing = worked
        except Exception as exc:  # each kind is answered in _settle
            status, closing, aborted = self._settle(request, connection, exc)
        self.accounting.answered(request, status, started, aborted)
        return not closing

    async def _later(
        self,
        request: web.Request,
        connection: FrontProtocol,
        started: float,
        rest: Callable[[], Awaitable[tuple[int, bool]]],
    ) -> bool:
        """The rest of `_answer`'s work, awaited in the front's task: in flight meanwhile."""
        accounting = self.accounting
        accounting.enter()
        status, aborted = 500, None
        try:
            status, closing = await rest()
        except asyncio.CancelledError:
            status, aborted = CLIENT_CLOSED_REQUEST, how_far(request, connection.sent)
            raise
        except Exception as exc:  # each kind is answered in _settle
            status, closing, aborted = self._settle(request, connection, exc)
        finally:
            accounting.leave()
            accounting.answered(request, status, started, aborted)
        return not closing

    def _settle(
        self, request: web.Request, connection: FrontProtocol, exc: Exception
    ) -> tuple[int, bool, str | None]:
        """(status, closing, how far it got) for work that raised: a refusal is answered, a
        client gone is a 499, anything else a 500."""
        if isinstance(exc, GatewayError):
            return (*self._refuse(request, connection, exc), None)
        if isinstance(exc, ConnectionResetError):
            return CLIENT_CLOSED_REQUEST, True, how_far(request, connection.sent)
        return (*self._failed(request, connection, exc), None)

    async def _relay(
        self,
        proxy: Proxy,
        connection: FrontProtocol,
        request: web.Request,
        upstream_connection: UpstreamConnection,
        response: ResponseHead,
        headers: list[tuple[bytes, bytes]],
        upstream: str,
    ) -> tuple[int, bool]:
        """The upstream's answer to the client: in one write when it is all here, else its
        head and then its body as it comes, with back-pressure. (status, closing)."""
        closing = self._closing(request)
        status, method = response.status, request.method
        bodiless = no_body(status, method)
        complete = upstream_connection.complete
        body = upstream_connection.take_body() if complete else b""
        dropped = _NOTHING
        if bodiless:
            # A HEAD answer keeps the upstream's length; 1xx, 204 and 304 carry none.
            if status in BODILESS_STATUSES:
                dropped = _LENGTH
            framing, chunked = b"", False
        elif complete:
            dropped = _LENGTH
            framing, chunked = b"Content-Length: %d\r\n" % len(body), False
        else:
            # Streamed: with the upstream's own length when it gave one, else in chunks.
            chunked = not any(name.lower() == b"content-length" for name, _ in headers)
            framing = b"Transfer-Encoding: chunked\r\n" if chunked else b""
        replaced = self.edge.replaced_upstream_headers(request)
        if replaced:
            dropped = dropped | {name.lower().encode() for name in replaced}
        lines = framing + self.edge.head_lines(request, own=False)
        answer = relayed_head(status, response.reason, headers, dropped, lines, closing=closing)
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


def _raise(refused: GatewayError) -> Worked:
    raise refused
