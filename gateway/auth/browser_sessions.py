"""Cookie sessions for proxied requests: who a request's cookies say it is.

- A request with an `Authorization` header is a Bearer client and never comes here: its token
  alone decides, as before (a bad token is a 401 even when cookies would do).
- A valid, unexpired access cookie is the identity, as a Bearer token would be.
- An expired (or missing) access cookie with a refresh cookie is refreshed here, by the same
  SessionService rotation as `/user/refresh`, and the request is forwarded; its response sets the
  new cookies. Concurrent requests carrying the same refresh cookie share one rotation
  (SingleFlight), and so do those arriving within `sessions.reuse_grace` after it; across
  replicas the grace window answers the rest with the same head.
- An unsafe method (or a WebSocket handshake) by cookie must pass the Origin check (403).
- Without a usable session, a top-level GET navigation is redirected to the login page with its
  URL; everything else gets the JSON 401. Dead cookies are cleared on the way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

from aiohttp import web

from ..config import AuthPolicy, GatewayConfig, RouteConfig
from ..errors import Unauthorized
from ..request_keys import learned
from ..telemetry.metrics import GatewayMetrics
from .audit import AuditTrail
from .bearer import authenticate
from .cookies import CookieSet, PresentedCookies, SessionCookies
from .navigation import is_navigation, wants_login_redirect
from .origins import OriginPolicy
from .redirects import login_location
from .revocation import RevocationView
from .sessions import SessionService, client_of
from .single_flight import SingleFlight
from .tokens import Identity, TokenPair, TokenService

__all__ = ["BrowserSessions"]

log = logging.getLogger(__name__)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Set-Cookie values to add to this request's response (written by write_cookies).
_SET_COOKIES = web.RequestKey("gateway_set_cookies", list[str])


@dataclass(slots=True)
class BrowserSessions:
    """Built once by create_app; `identify` for the proxy, `write_cookies` for every response."""

    config: GatewayConfig
    _: KW_ONLY
    cookies: SessionCookies
    origins: OriginPolicy
    tokens: TokenService
    revocations: RevocationView
    sessions: SessionService
    metrics: GatewayMetrics
    audit: AuditTrail
    clock: Callable[[], float] = time.time
    # Results are shared as long as the grace window would honour the old token anyway,
    # measured on the same clock.
    flights: SingleFlight[str, TokenPair] = field(init=False)

    def __post_init__(self) -> None:
        self.flights = SingleFlight(remember=self.config.sessions.reuse_grace, clock=self.clock)

    @staticmethod
    def applies(request: web.BaseRequest, route: RouteConfig) -> bool:
        """Cookies decide only on routes that look at identity, and never for Bearer clients."""
        return route.auth is not AuthPolicy.PUBLIC and "Authorization" not in request.headers

    def decides(self, request: web.BaseRequest, route: RouteConfig) -> bool:
        """Whether the cookie path must answer: it applies, and the request carries cookies or
        is a navigation (a redirect to the login page). Otherwise its answer is the Bearer
        path's for a request without a token (anonymous, or 401 `missing`), so that one is
        taken: it reads no cookies."""
        return self.applies(request, route) and (
            "Cookie" in request.headers or is_navigation(request)
        )

    async def current(self, request: web.BaseRequest) -> Identity | None:
        """The identity of the request's session cookies, refreshing them when needed (for
        the login page: a browser with a live session goes on to where it was going)."""
        presented = self.cookies.read(request)
        return await self._session(request, presented) if presented.has_session else None

    async def identify(
        self, request: web.Request, route: RouteConfig, return_to: str, *, websocket: bool = False
    ) -> Identity | None:
        """The identity the cookies prove under the route's policy (None: anonymous on an
        optional route), refreshing an expired access cookie; or 403 (cross-origin unsafe
        request), a redirect to the login page (a navigation) or 401."""
        presented = self.cookies.read(request)
        if not presented.has_session:
            self._anonymous(request, route, return_to, presented=False)
            return None
        if websocket or request.method not in SAFE_METHODS:
            self.origins.check(request)
        identity = await self._session(request, presented)
        if identity is None:
            self._anonymous(request, route, return_to, presented=True)
        return identity

    def start(self, request: web.BaseRequest, cookies: CookieSet, pair: TokenPair) -> None:
        """Have the response to `request` store a new token pair."""
        request[_SET_COOKIES] = cookies.session(pair)

    def end(self, request: web.BaseRequest, cookies: CookieSet) -> None:
        """Have the response to `request` delete the session cookies."""
        request[_SET_COOKIES] = cookies.cleared()

    @staticmethod
    def pending(request: web.BaseRequest) -> list[str]:
        """The Set-Cookie values the response to `request` is to carry (forward-auth hands a
        refresh's new cookies to the ingress)."""
        return list(request.get(_SET_COOKIES, ()))

    def also_set(self, request: web.BaseRequest, cookie: str) -> None:
        """Add one more Set-Cookie (the login form's CSRF token) to the response."""
        request[_SET_COOKIES] = [*request.get(_SET_COOKIES, ()), cookie]

    def write_cookies(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        """For every response, just before its headers go out (the edge's on_prepare calls it):
        write the pending cookies; a response carrying them is never stored by a cache (a
        shared cache would hand one user's session to the next)."""
        pending = learned(request).get(_SET_COOKIES)
        if pending:
            for cookie in pending:
                response.headers.add("Set-Cookie", cookie)
            response.headers["Cache-Control"] = "no-store"

    async def close(self) -> None:
        await self.flights.close()

    async def _session(
        self, request: web.BaseRequest, presented: PresentedCookies
    ) -> Identity | None:
        """The access cookie's identity while it lasts, else a refreshed one; None (and the
        cookies cleared) when the session is over."""
        identity = self._verified(presented.access)
        if identity is not None and (
            identity.expires_at > self.clock() or presented.refresh is None
        ):
            return identity
        if presented.refresh is not None:
            identity = await self._refreshed(request, presented.cookies, presented.refresh)
            if identity is not None:
                return identity
        self.end(request, presented.cookies)
        return None

    def _verified(self, access: str | None) -> Identity | None:
        if access is None:
            return None
        try:
            return authenticate(access, self.tokens, self.revocations)
        except Unauthorized:
            return None

    async def _refreshed(
        self, request: web.BaseRequest, cookies: CookieSet, token: str
    ) -> Identity | None:
        try:
            pair = await self.flights.run(token, lambda: self._rotate(token, request))
            # A shared or remembered pair is checked like any token: a logout since then wins.
            identity = authenticate(pair.access_token, self.tokens, self.revocations)
        except Unauthorized:
            return None
        self.start(request, cookies, pair)
        return identity

    async def _rotate(self, token: str, request: web.BaseRequest) -> TokenPair:
        try:
            refreshed = await self.sessions.refresh(token, client_of(request))
        except Unauthorized as exc:
            self.metrics.refreshes.labels(exc.reason).inc()
            if exc.reason == "reuse_detected":
                self.audit.reuse_detected(request, self.tokens, token)
            raise
        self.metrics.refreshes.labels(refreshed.outcome).inc()
        return refreshed.pair

    def _anonymous(
        self, request: web.BaseRequest, route: RouteConfig, return_to: str, *, presented: bool
    ) -> None:
        """Anonymous is fine on an optional route; otherwise the login redirect or the 401."""
        if route.auth is AuthPolicy.OPTIONAL:
            return
        self.metrics.token_rejections.labels("session_expired" if presented else "missing").inc()
        if wants_login_redirect(request):
            raise web.HTTPFound(login_location(return_to), headers={"Cache-Control": "no-store"})
        if presented:
            raise Unauthorized(
                "Session has expired or ended; log in again",
                token_presented=True,
                reason="session_expired",
            )
        raise Unauthorized("Missing bearer token", token_presented=False, reason="missing")
