"""The decision endpoints: "may this request pass?" for an ingress that proxies by itself.

The original request (forward_auth.shapes) goes through the proxy's own policy path
(proxy.policy.RequestPolicy: normalization, the route table, the Authenticator, cookie sessions),
so what the gateway would refuse when proxying it refuses here. No body is read, nothing is
forwarded, and the answers are small:

- 200, with the identity headers for a permitted request (none for a public route; empty ones
  for Envoy, whose `allowed_upstream_headers` must overwrite a client's copies);
- 401 with `WWW-Authenticate` for a missing or bad token; a browser navigation with cookie
  sessions is sent to the login page: a 302 for Traefik, Caddy and Envoy, which pass it on, and
  for nginx (whose `auth_request` takes only 2xx, 401 and 403) a 401 with the `Location` its
  `error_page 401 = @login` location redirects to;
- 403 for roles, for a path no route names, for a spelling the proxy would refuse, the wrong
  method, and for any request from a peer outside `server.trusted_proxies`;
- a route's `rate_limit` counts decisions as the proxy counts requests (by the original
  client's address, from the ingress's X-Forwarded-For, or by user): 429 with Retry-After, or
  403 for nginx (whose `auth_request` would make a 429 its own 500). A decision on a limited
  route is never offered for caching: a cached permit would not be counted.

A refresh inside the decision puts the new cookies on the answer as Set-Cookie (and for nginx
also as X-Gateway-Set-Cookie-1, -2, which `auth_request_set` can read one by one).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field

from aiohttp import web
from yarl import URL

from ..auth.bearer import bearer_token
from ..auth.tokens import Identity
from ..config import GatewayConfig, RouteConfig
from ..errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from ..networks import address_in
from ..proxy.policy import RequestPolicy
from ..proxy.route_limits import RouteLimiter
from ..proxy.routes import RouteTable
from ..proxy.runtime import RuntimeHolder
from ..request_keys import ROUTE_NAME, USER_ID
from .shapes import Ingress, OriginalRequest, from_ext_authz, from_headers

__all__ = ["Decisions"]

NGINX_COOKIE_HEADER = "X-Gateway-Set-Cookie-{}"
# The proxy's refusals of a path or method: auth_request turns anything but 401/403 into a
# 500, so here they are all 403 (deny by default), with the proxy's message.
_ROUTE_REFUSALS = (BadRequest, NotFound, MethodNotAllowed)


@dataclass(frozen=True, slots=True)
class TokenDecision:
    """A request decided by its token: the request as the ingress saw it, its route, who."""

    original: OriginalRequest
    route: RouteConfig
    identity: Identity | None


@dataclass(slots=True)
class Decisions:
    """Built once by create_app; `auth` answers /_gateway/auth, `ext_authz` Envoy's checks."""

    runtime: RuntimeHolder
    policy: RequestPolicy
    config: GatewayConfig
    _: KW_ONLY
    # The proxy's route rate limits, applied to the original request.
    limiter: RouteLimiter
    clock: Callable[[], float] = time.time
    # Rendered once: every anonymous answer is the same.
    _anonymous: dict[Ingress, dict[str, str]] = field(init=False)

    def __post_init__(self) -> None:
        self._anonymous = {Ingress.ENVOY: {name: "" for name in self.config.identity_headers.names}}

    async def auth(self, request: web.Request) -> web.Response:
        """nginx auth_request, Traefik forwardAuth, Caddy forward_auth."""
        request[ROUTE_NAME] = "forward_auth"
        self._check_peer(request)
        return await self._decide(request, from_headers(request.headers))

    async def ext_authz(self, request: web.Request) -> web.Response:
        """Envoy's ext_authz HTTP service: /_gateway/ext-authz/<original path>."""
        request[ROUTE_NAME] = "ext_authz"
        self._check_peer(request)
        return await self._decide(request, from_ext_authz(request))

    def _check_peer(self, request: web.Request) -> None:
        if not address_in(request.remote, self.config.server.trusted_proxies):
            raise Forbidden(
                "Forward-auth answers only the ingress: add its address to server.trusted_proxies"
            )

    def by_token_now(self, request: web.Request) -> TokenDecision:
        """`auth` for a request the session cookies do not decide (it carries Authorization,
        or they are off), without awaiting anything (gateway.lane): the refusal raised, or the
        decision, whose route's rate limit is still to be applied (`limit`) if it has one."""
        request[ROUTE_NAME] = "forward_auth"
        self._check_peer(request)
        original = from_headers(request.headers)
        _, route = self._route(self.runtime.current.routes, original)
        return self._by_token_now(request, original, route)

    async def limit(self, request: web.Request, decision: TokenDecision) -> None:
        """The decided route's rate limit (429, or 403 for nginx)."""
        await self._limit(request, decision.original, decision.route, decision.identity)

    def permit(self, decision: TokenDecision) -> dict[str, str]:
        """The headers of the permitting answer."""
        return self._permit(
            decision.original, decision.identity, cacheable=decision.route.rate_limit is None
        )

    async def _decide(self, request: web.Request, original: OriginalRequest) -> web.Response:
        runtime = self.runtime.acquire()
        try:
            path, route = self._route(runtime.routes, original)
            if not self.policy.by_cookie(request, route):
                return web.Response(headers=await self._by_token(request, original, route))
            return await self._by_cookie(request, original, route, path)
        finally:
            self.runtime.release(runtime)

    def _route(self, routes: RouteTable, original: OriginalRequest) -> tuple[str, RouteConfig]:
        try:
            return self.policy.route(routes, original.raw_path, original.method)
        except _ROUTE_REFUSALS as exc:
            raise Forbidden(exc.message) from None

    async def _by_token(
        self, request: web.Request, original: OriginalRequest, route: RouteConfig
    ) -> dict[str, str]:
        decision = self._by_token_now(request, original, route)
        await self.limit(request, decision)
        return self.permit(decision)

    def _by_token_now(
        self, request: web.Request, original: OriginalRequest, route: RouteConfig
    ) -> TokenDecision:
        identity = self.policy.identify_by_token(
            request, route, lambda: bearer_token(request.headers)
        )
        return TokenDecision(original, route, identity)

    async def _by_cookie(
        self, request: web.Request, original: OriginalRequest, route: RouteConfig, path: str
    ) -> web.Response:
        """Cookie sessions look at the request as the browser sent it (method, URL, scheme and
        host: navigation, Origin and which cookies apply), so they get a copy that is it."""
        assert self.policy.browser is not None  # noqa: S101 - by_cookie said so
        browser = self.policy.browser
        scheme, host = original.origin(request)
        seen = request.clone(
            method=original.method,
            rel_url=URL.build(path=path, query_string=original.query, encoded=True),
            scheme=scheme,
            host=host,
        )
        cookies: list[str] = []
        try:
            identity = await self.policy.identify(seen, route, path, _no_token)
        except web.HTTPFound as found:
            if original.ingress is not Ingress.NGINX:
                raise
            login = Unauthorized("Log in first", token_presented=False, reason="missing")
            login.headers.update({"Location": str(found.location), "Cache-Control": "no-store"})
            login.headers.update(self._cookie_headers(original, browser.pending(seen)))
            raise login from None
        except GatewayError as exc:
            exc.headers.update(self._cookie_headers(original, browser.pending(seen)))
            raise
        finally:
            # The copy's findings belong to the request the middleware logs and answers.
            if USER_ID in seen:
                request[USER_ID] = seen[USER_ID]
            cookies = browser.pending(seen)
            for cookie in cookies:
                browser.also_set(request, cookie)
        await self._limit(request, original, route, identity, cookies)
        # Never cacheable: a cookie decision depends on Origin and Sec-Fetch-* too, which an
        # ingress's cache key would not hold.
        return web.Response(headers=self._permit(original, identity, cookies, cacheable=False))

    async def _limit(
        self,
        request: web.Request,
        original: OriginalRequest,
        route: RouteConfig,
        identity: Identity | None,
        cookies: Sequence[str] = (),
    ) -> None:
        try:
            await self.limiter.check(request, route, identity)
        except TooManyRequests as exc:
            # A refresh made in this decision must still reach the browser.
            exc.headers.update(self._cookie_headers(original, cookies))
            if original.ingress is not Ingress.NGINX:
                raise
            raise Forbidden(exc.message, headers=exc.headers) from None

    def _permit(
        self,
        original: OriginalRequest,
        identity: Identity | None,
        cookies: Sequence[str] = (),
        *,
        cacheable: bool = True,
    ) -> dict[str, str]:
        """The headers of a permitting answer."""
        if identity is None:
            headers = dict(self._anonymous.get(original.ingress, {}))
            lifetime = self.config.forward_auth.cache_max_age
        else:
            names = self.config.identity_headers
            headers = {
                names.user_id: identity.user_id,
                names.username: identity.username,
                names.roles: ",".join(identity.roles),
            }
            lifetime = math.floor(identity.expires_at - self.clock())
        if cookies:
            headers.update(self._cookie_headers(original, cookies))
        elif self.config.forward_auth.cache_max_age and cacheable:
            # Never cached past the token's own expiry (nor, by config, past the revocation bound).
            seconds = min(self.config.forward_auth.cache_max_age, lifetime)
            if seconds > 0:
                headers["Cache-Control"] = f"private, max-age={seconds}"
                if original.ingress is Ingress.NGINX:
                    # What proxy_cache goes by (it stores no `private` answer by itself).
                    headers["X-Accel-Expires"] = str(seconds)
        return headers

    @staticmethod
    def _cookie_headers(original: OriginalRequest, cookies: Sequence[str]) -> dict[str, str]:
        if original.ingress is not Ingress.NGINX:
            return {}  # Set-Cookie itself is added to every answer by BrowserSessions
        return {NGINX_COOKIE_HEADER.format(n): cookie for n, cookie in enumerate(cookies, 1)}


def _no_token() -> str | None:
    return None  # cookies decide: there is no Authorization header
