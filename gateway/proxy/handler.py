"""The catch-all handler: the request policy (path, route, caller), then forward."""

from __future__ import annotations

from aiohttp import web

from ..auth.bearer import bearer_token, websocket_credentials
from ..draining import Drain
from ..request_keys import REQUEST_ID, ROUTE_NAME, UPSTREAM_NAME
from .policy import RequestPolicy
from .route_limits import RouteLimiter
from .runtime import RuntimeHolder
from .websocket import SocketSessions

__all__ = ["ProxyHandler"]


class ProxyHandler:
    """Every request that is not one of the gateway's own endpoints comes here."""

    def __init__(
        self,
        runtime: RuntimeHolder,
        policy: RequestPolicy,
        limiter: RouteLimiter,
        drain: Drain,
        sockets: SocketSessions,
    ) -> None:
        self._runtime = runtime
        # Open WebSockets, closed when their session ends.
        self._sockets = sockets
        self._policy = policy
        # Route rate limits count a request once its caller is known (by: user).
        self._limiter = limiter
        # WebSockets still open when the shutdown timeout is up are told 1001.
        self._drain = drain

    async def forward(self, request: web.Request) -> web.StreamResponse:
        # The runtime (routes, upstream pools) is held for the whole request: a reload
        # meanwhile lets this request finish on the config it started with.
        runtime = self._runtime.acquire()
        try:
            policy = self._policy
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
                await self._limiter.check(request, route, identity)
                return await runtime.proxy.forward_websocket(
                    request,
                    route,
                    path,
                    identity,
                    request_id,
                    credentials,
                    self._drain,
                    self._sockets,
                )
            identity = await policy.identify(
                request, route, path, lambda: bearer_token(request.headers)
            )
            await self._limiter.check(request, route, identity)
            return await runtime.proxy.forward(request, route, path, identity, request_id)
        finally:
            self._runtime.release(runtime)


def _is_websocket_upgrade(request: web.Request) -> bool:
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )
