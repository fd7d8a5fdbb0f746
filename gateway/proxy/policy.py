"""The one policy path from a request's path and method to who may make it: normalize the path,
refuse the gateway's own paths in any other spelling, pick exactly one route, and identify the
caller under the route's policy (Bearer token, or cookie sessions for a request without
`Authorization`). The proxy handler and forward-auth's decision both go through here, so a
spelling or a token refused by one is refused by the other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from ..auth.authenticator import Authenticator
from ..auth.browser_sessions import BrowserSessions
from ..auth.tokens import Identity
from ..config import RouteConfig
from ..config.endpoints import is_own_path
from ..errors import NotFound, shown
from ..request_keys import USER_ID
from .paths import normalize_path
from .routes import RouteTable

__all__ = ["Permitted", "RequestPolicy"]


@dataclass(frozen=True, slots=True)
class Permitted:
    """A request the policy let through, as the proxy forwards it."""

    route: RouteConfig
    # Normalized: what the route matched and what goes upstream (after its strip_prefix).
    path: str
    identity: Identity | None
    request_id: str


class RequestPolicy:
    """Built once by create_app from the route-policy `Authenticator` and, with cookie sessions
    on, `BrowserSessions`."""

    def __init__(self, authenticator: Authenticator, browser: BrowserSessions | None) -> None:
        self._authenticator = authenticator
        # Cookie sessions (browser.cookie_sessions): None when they are off.
        self.browser = browser

    @staticmethod
    def route(routes: RouteTable, raw_path: str, method: str) -> tuple[str, RouteConfig]:
        """The normalized path and its one route; 400 for a refused spelling, 404 for no route
        (or one of the gateway's own paths spelled otherwise), 405 for the wrong method."""
        found = routes.found_before(raw_path, method)
        if found is not None:
            return found
        path = normalize_path(raw_path)
        if is_own_path(path):
            # Only a non-canonical spelling (//user/refresh, /user/./login) gets here; it
            # must not be passed to a broad route with the token or password it carries.
            raise NotFound(f"The gateway answers {shown(path)} only when it is spelled exactly so")
        found = path, routes.resolve(path, method)
        routes.remember(raw_path, method, found)
        return found

    def by_cookie(self, request: web.BaseRequest, route: RouteConfig) -> bool:
        """Whether the session cookies decide (cookie sessions on, no Authorization header, a
        route that looks at identity)."""
        return self.browser is not None and self.browser.applies(request, route)

    async def identify(
        self,
        request: web.Request,
        route: RouteConfig,
        path: str,
        read_token: Callable[[], str | None],
        *,
        cookies: bool = True,
        websocket: bool = False,
    ) -> Identity | None:
        """The identity the route lets through (None: public, or anonymous on an optional
        route); 401 (or, for a navigation by cookie, the redirect to the login page) or 403.
        `cookies=False`: the request carries a token elsewhere (a WebSocket's query)."""
        browser = self.browser
        if cookies and browser is not None and browser.decides(request, route):
            query = request.rel_url.raw_query_string
            return_to = f"{path}?{query}" if query else path
            identity = await browser.identify(request, route, return_to, websocket=websocket)
            return self._authorized(request, route, identity)
        return self.identify_by_token(request, route, read_token)

    def identify_by_token(
        self, request: web.BaseRequest, route: RouteConfig, read_token: Callable[[], str | None]
    ) -> Identity | None:
        """`identify` for a request the session cookies do not decide: nothing to await."""
        return self._authorized(request, route, self._authenticator.identify(route, read_token))

    def _authorized(
        self, request: web.BaseRequest, route: RouteConfig, identity: Identity | None
    ) -> Identity | None:
        if identity is not None:
            request[USER_ID] = identity.user_id  # logged even when the roles refuse it
        self._authenticator.authorize(route, identity)
        return identity
