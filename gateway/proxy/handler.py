"""The catch-all handler: normalize the path, pick the route, identify the caller, forward."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from ..auth.authenticator import Authenticator
from ..auth.bearer import bearer_token, websocket_credentials
from ..auth.browser_sessions import BrowserSessions
from ..auth.tokens import Identity
from ..config import RouteConfig
from ..config.endpoints import is_own_path
from ..errors import NotFound
from ..request_keys import REQUEST_ID, ROUTE_NAME, UPSTREAM_NAME, USER_ID
from .paths import normalize_path
from .runtime import RuntimeHolder

__all__ = ["ProxyHandler"]


class ProxyHandler:
    """Every request that is not one of the gateway's own endpoints comes here."""

    def __init__(
        self,
        runtime: RuntimeHolder,
        authenticator: Authenticator,
        browser: BrowserSessions | None = None,
    ) -> None:
        self._runtime = runtime
        self._authenticator = authenticator
        # Cookie sessions (browser.cookie_sessions): None when they are off.
        self._browser = browser

    async def forward(self, request: web.Request) -> web.StreamResponse:
        # The runtime (routes, upstream pools) is held for the whole request: a reload
        # meanwhile lets this request finish on the config it started with.
        runtime = self._runtime.acquire()
        try:
            path = normalize_path(request.raw_path.partition("?")[0])
            if is_own_path(path):
                # Only a non-canonical spelling (//user/refresh, /user/./login) gets here; it
                # must not be forwarded by a broad route with the token or password it carries.
                raise NotFound(f"The gateway answers {path} only when it is spelled exactly so")
            route = runtime.routes.resolve(path, request.method)
            request[ROUTE_NAME] = route.name
            request[UPSTREAM_NAME] = route.upstream
            request_id = request[REQUEST_ID]
            browser = self._browser
            if _is_websocket_upgrade(request):
                credentials = websocket_credentials(
                    request, runtime.config.websocket_token_parameter
                )
                if (
                    browser is not None
                    and credentials.token is None
                    and browser.applies(request, route)
                ):
                    identity = await self._by_cookie(browser, request, route, path, websocket=True)
                else:
                    identity = self._identify(request, route, lambda: credentials.token)
                return await runtime.proxy.forward_websocket(
                    request, route, path, identity, request_id, credentials
                )
            if browser is not None and browser.applies(request, route):
                identity = await self._by_cookie(browser, request, route, path)
            else:
                identity = self._identify(request, route, lambda: bearer_token(request.headers))
            return await runtime.proxy.forward(request, route, path, identity, request_id)
        finally:
            self._runtime.release(runtime)

    def _identify(
        self, request: web.Request, route: RouteConfig, read_token: Callable[[], str | None]
    ) -> Identity | None:
        identity = self._authenticator.identify(route, read_token)
        if identity is not None:
            request[USER_ID] = identity.user_id  # logged even when the roles refuse it
        self._authenticator.authorize(route, identity)
        return identity

    async def _by_cookie(
        self,
        browser: BrowserSessions,
        request: web.Request,
        route: RouteConfig,
        path: str,
        *,
        websocket: bool = False,
    ) -> Identity | None:
        """The identity of the session cookies (a request without Authorization)."""
        query = request.rel_url.raw_query_string
        return_to = f"{path}?{query}" if query else path
        identity = await browser.identify(request, route, return_to, websocket=websocket)
        if identity is not None:
            request[USER_ID] = identity.user_id
        self._authenticator.authorize(route, identity)
        return identity


def _is_websocket_upgrade(request: web.Request) -> bool:
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )
