"""The endpoints a browser uses for a cookie session: the login page and logout by cookie.

- `GET /_gateway/login?rd=/where` shows the form (or, with a valid session already, goes to
  `rd`); `POST` logs in under the same limits as `/user/login`, sets the session cookies and
  answers 303 to `rd` (made safe: see redirects). Login CSRF: the form's hidden `csrf` field
  must equal the `csrf` cookie (double submit; `__Host-` keeps other hosts from planting one),
  and the Origin check applies. Wrong credentials, too many failures and an expired form show
  the page again with one error.
- `POST /user/logout` with session cookies (no body, or a form) ends that session after the
  Origin check and clears the cookies: 303 to the login page for a form, JSON for `fetch()`.
  A navigation to `GET /user/logout` shows a confirmation with that form. Every other request
  to /user/logout (JSON body, Bearer) is the JSON API's, unchanged.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass

from aiohttp import web

from ..config.endpoints import OWN_ENDPOINTS
from ..errors import GatewayError, MethodNotAllowed, TooManyRequests, Unauthorized
from ..request_keys import ROUTE_NAME
from ..telemetry.metrics import GatewayMetrics
from .browser_sessions import BrowserSessions
from .cookies import PresentedCookies
from .endpoints import UserEndpoints
from .form_body import FORM_TYPE, read_form
from .json_body import require_string
from .navigation import accepts_html, is_navigation
from .pages import PageStyle, login_page, logout_page
from .redirects import LOGIN_PATH, safe_return_url
from .sessions import BAD_CREDENTIALS
from .tokens import ACCESS, REFRESH, TokenService

__all__ = ["BrowserEndpoints"]

LOGOUT_PATH = next(endpoint.path for endpoint in OWN_ENDPOINTS if endpoint.name == "logout")
EXPIRED_FORM = "This form has expired. Please sign in again."
_CSRF = re.compile(r"[A-Za-z0-9_-]{43}")
_NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True, kw_only=True, slots=True)
class BrowserEndpoints:
    """The handlers of /_gateway/login and the cookie side of /user/logout."""

    users: UserEndpoints
    browser: BrowserSessions
    tokens: TokenService
    metrics: GatewayMetrics
    style: PageStyle

    async def login(self, request: web.Request) -> web.StreamResponse:
        request[ROUTE_NAME] = "login_page"
        if request.method in ("GET", "HEAD"):
            return await self._show(request)
        if request.method == "POST":
            return await self._submit(request)
        raise MethodNotAllowed(
            "Use GET for the login page and POST to log in",
            allowed=frozenset({"GET", "HEAD", "POST"}),
        )

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """Logout by cookie, or the JSON API's logout for everything else."""
        if "Authorization" not in request.headers:
            if request.method in ("GET", "HEAD") and is_navigation(request):
                request[ROUTE_NAME] = "logout"
                return self.style.response(logout_page(self.style, action=LOGOUT_PATH))
            if request.method == "POST" and (
                not request.body_exists or request.content_type == FORM_TYPE
            ):
                presented = self.browser.cookies.read(request)
                if presented.has_session or is_navigation(request):
                    return await self._cookie_logout(request, presented)
        return await self.users.logout(request)

    async def _show(self, request: web.Request) -> web.Response:
        return_to = self._return_url(request, request.query.get("rd"))
        if await self.browser.current(request) is not None:
            raise web.HTTPSeeOther(return_to, headers=_NO_STORE)
        presented = self.browser.cookies.read(request)
        notice = "You have been logged out." if "logged_out" in request.query else ""
        return self._page(request, presented, return_to, notice=notice)

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        self.browser.origins.check(request)
        try:
            form = await read_form(request)
            username = require_string(form, "username", max_length=256)
            password = require_string(form, "password", max_length=1024)
        except GatewayError:
            self.metrics.logins.labels("bad_request").inc()
            raise
        return_to = self._return_url(request, form.get("rd"))
        presented = self.browser.cookies.read(request)
        if not _same_token(presented.csrf, form.get("csrf", "")):
            self.metrics.logins.labels("bad_request").inc()
            return self._page(request, presented, return_to, error=EXPIRED_FORM, status=403)
        try:
            pair = await self.users.log_in(request, username, password)
        except TooManyRequests as exc:
            return self._page(
                request, presented, return_to, username, exc.message, 429, exc.headers
            )
        except Unauthorized as exc:
            return self._page(
                request, presented, return_to, username, BAD_CREDENTIALS, 401, exc.headers
            )
        # This browser's previous session, if any, is over: its cookies are replaced.
        await self._end_sessions(request, presented)
        self.browser.start(request, presented.cookies, pair)
        raise web.HTTPSeeOther(return_to, headers=_NO_STORE)

    def _page(
        self,
        request: web.Request,
        presented: PresentedCookies,
        return_to: str,
        username: str = "",
        error: str = "",
        status: int = 200,
        headers: dict[str, str] | None = None,
        *,
        notice: str = "",
    ) -> web.Response:
        # Keep a live form token (a second tab's form stays valid); renew its cookie either way.
        csrf = presented.csrf
        if csrf is None or not _CSRF.fullmatch(csrf):
            csrf = secrets.token_urlsafe(32)
        self.browser.also_set(request, presented.cookies.csrf_token(csrf))
        body = login_page(
            self.style,
            action=LOGIN_PATH,
            csrf=csrf,
            return_to=return_to,
            username=username,
            error=error,
            notice=notice,
        )
        return self.style.response(body, status=status, headers=headers)

    async def _cookie_logout(
        self, request: web.Request, presented: PresentedCookies
    ) -> web.StreamResponse:
        request[ROUTE_NAME] = "logout"
        self.browser.origins.check(request)
        await self._end_sessions(request, presented)
        self.browser.end(request, presented.cookies)
        if is_navigation(request) or accepts_html(request.headers.get("Accept", "")):
            raise web.HTTPSeeOther(f"{LOGIN_PATH}?logged_out=1", headers=_NO_STORE)
        return web.json_response({"message": "Logged out"}, headers=_NO_STORE)

    async def _end_sessions(self, request: web.Request, presented: PresentedCookies) -> None:
        """End the sessions the cookies name, expired tokens included (as /user/logout)."""
        named = {
            self.tokens.session_of(token, use=use)
            for token, use in ((presented.refresh, REFRESH), (presented.access, ACCESS))
            if token is not None
        }
        for session_id in sorted(s for s in named if s is not None):
            await self.users.end_session(request, session_id)

    def _return_url(self, request: web.Request, value: str | None) -> str:
        origins = self.browser.origins
        return safe_return_url(value, allowed_origins=origins.trusted | origins.own(request))


def _same_token(cookie: str | None, field: str) -> bool:
    if cookie is None or not _CSRF.fullmatch(cookie):
        return False
    return hmac.compare_digest(cookie.encode(), field.encode("utf-8", "replace"))
