"""The catch-all handler: the request policy (path, route, caller), then forward."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import HttpVersion11, web

from ..auth.bearer import bearer_token, websocket_credentials
from ..draining import Drain
from ..errors import GatewayError, shown
from ..request_keys import REQUEST_ID, ROUTE_NAME, UPSTREAM_NAME
from .policy import Permitted, RequestPolicy
from .route_limits import RouteLimiter
from .runtime import RuntimeHolder
from .websocket import SocketSessions

__all__ = ["ProxyHandler", "defer_continue"]

# Set on a request whose `Expect: 100-continue` is not answered yet.
_CONTINUE_DEFERRED = web.RequestKey("continue_deferred", bool)


@dataclass(frozen=True, slots=True)
class ProxyHandler:
    """Every request that is not one of the gateway's own endpoints comes here."""

    runtime: RuntimeHolder
    policy: RequestPolicy
    # Route rate limits count a request once its caller is known (by: user).
    limiter: RouteLimiter
    # WebSockets still open when the shutdown timeout is up are told 1001.
    drain: Drain
    # Open WebSockets, closed when their session ends.
    sockets: SocketSessions

    async def forward(self, request: web.Request) -> web.StreamResponse:
        # The runtime (routes, upstream pools) is held for the whole request: a reload
        # meanwhile lets this request finish on the config it started with.
        runtime = self.runtime.acquire()
        try:
            policy = self.policy
            path, route = policy.route(
                runtime.routes, request.raw_path.partition("?")[0], request.method
            )
            request[ROUTE_NAME] = route.name
            request[UPSTREAM_NAME] = route.upstream
            request_id = request[REQUEST_ID]
            if _is_websocket_upgrade(request):
                credentials = websocket_credentials(
                    request, runtime.config.websocket_token_parameter
                )
                identity = await policy.identify(
                    request,
                    route,
                    path,
                    lambda: credentials.token,
                    cookies=credentials.token is None,
                    websocket=True,
                )
                await self.limiter.check(request, route, identity)
                return await runtime.proxy.forward_websocket(
                    request,
                    Permitted(route, path, identity, request_id),
                    credentials,
                    self.drain,
                    self.sockets,
                )
            waiting = request.get(_CONTINUE_DEFERRED, False)
            try:
                identity = await policy.identify(
                    request, route, path, lambda: bearer_token(request.headers)
                )
                await self.limiter.check(request, route, identity)
            except GatewayError as refused:
                if waiting:
                    # The client holds its body back until 100 Continue, which it will not
                    # get: close after the answer rather than wait for a body never sent.
                    refused.closes_connection = True
                raise
            if waiting:
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                request.writer.output_size = 0
            return await runtime.proxy.forward(
                request, Permitted(route, path, identity, request_id)
            )
        finally:
            self.runtime.release(runtime)


async def defer_continue(request: web.Request) -> None:
    """The catch-all route's Expect handler: `100 Continue` is sent only once the request is
    authenticated and allowed (in `forward`), so an unauthenticated client gets its 401 without
    sending its body, and the gateway never reads one it would refuse."""
    expect = request.headers.get("Expect", "")
    if request.version != HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {shown(expect)}")
    request[_CONTINUE_DEFERRED] = True
    return None


def _is_websocket_upgrade(request: web.Request) -> bool:
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )
