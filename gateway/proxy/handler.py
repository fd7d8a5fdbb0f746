"""The catch-all handler: normalize the path, pick the route, check the token, forward."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from ..appkeys import METRICS, REVOCATIONS, RUNTIME, TOKENS
from ..auth.bearer import authenticate, bearer_token, websocket_credentials
from ..auth.tokens import Identity
from ..config import AuthPolicy, RouteConfig
from ..config.endpoints import is_own_path
from ..errors import Forbidden, NotFound, Unauthorized
from ..request_keys import REQUEST_ID, ROUTE_NAME, UPSTREAM_NAME, USER_ID
from .paths import normalize_path

__all__ = ["forward"]


async def forward(request: web.Request) -> web.StreamResponse:
    # The runtime (routes, upstream pools) is held for the whole request: a reload meanwhile
    # lets this request finish on the config it started with.
    with request.app[RUNTIME].use() as runtime:
        path = normalize_path(request.raw_path.partition("?")[0])
        if is_own_path(path):
            # Only a non-canonical spelling (//user/refresh, /user/./login) gets here; it must
            # not be forwarded by a broad route with the token or password it carries.
            raise NotFound(f"The gateway answers {path} only when it is spelled exactly so")
        route = runtime.routes.resolve(path, request.method)
        request[ROUTE_NAME] = route.name
        request[UPSTREAM_NAME] = route.upstream
        request_id = request[REQUEST_ID]
        if _is_websocket_upgrade(request):
            credentials = websocket_credentials(request, runtime.config.websocket_token_parameter)
            identity = _identify(request, route, lambda: credentials.token)
            return await runtime.proxy.forward_websocket(
                request, route, path, identity, request_id, credentials
            )
        identity = _identify(request, route, lambda: bearer_token(request.headers))
        return await runtime.proxy.forward(request, route, path, identity, request_id)


def _identify(
    request: web.Request, route: RouteConfig, read_token: Callable[[], str | None]
) -> Identity | None:
    """The identity the route needs; public routes never look at the token."""
    if route.auth is AuthPolicy.PUBLIC:
        return None
    tokens, revocations = request.app[TOKENS], request.app[REVOCATIONS]
    try:
        token = read_token()
        if token is None and route.auth is AuthPolicy.OPTIONAL:
            return None
        identity = authenticate(token, tokens, revocations)
    except Unauthorized as exc:
        request.app[METRICS].token_rejections.labels(exc.reason).inc()
        if route.auth is AuthPolicy.OPTIONAL:
            return None  # optional: an invalid token means anonymous, not an error
        raise
    request[USER_ID] = identity.user_id
    if route.roles and route.roles.isdisjoint(identity.roles):
        raise Forbidden(f"Requires one of the roles: {', '.join(sorted(route.roles))}")
    return identity


def _is_websocket_upgrade(request: web.Request) -> bool:
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )
