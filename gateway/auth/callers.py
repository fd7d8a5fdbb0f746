"""Who is calling one of the gateway's own account endpoints (`/user/sessions`, logout
everywhere): the Bearer token of a client, or, with cookie sessions on and no `Authorization`
header, the browser's session cookies (refreshed when needed, as for a proxied request)."""

from __future__ import annotations

from aiohttp import web

from ..errors import Unauthorized
from .bearer import authenticate, bearer_token
from .browser_sessions import SAFE_METHODS, BrowserSessions
from .revocation import RevocationView
from .tokens import Identity, TokenService

__all__ = ["Callers"]


class Callers:
    """Built once by create_app with the same services the proxy uses."""

    def __init__(
        self, tokens: TokenService, revocations: RevocationView, browser: BrowserSessions | None
    ) -> None:
        self._tokens = tokens
        self._revocations = revocations
        self._browser = browser

    async def identify(self, request: web.Request) -> Identity:
        """The caller's verified identity of a live session, or 401 (403 for a cross-origin
        unsafe request by cookie)."""
        browser = self._browser
        if browser is None or "Authorization" in request.headers:
            return authenticate(bearer_token(request.headers), self._tokens, self._revocations)
        presented = browser.cookies.read(request)
        if not presented.has_session:
            raise Unauthorized(
                "Send the access token as 'Authorization: Bearer', or the session cookies",
                token_presented=False,
                reason="missing",
            )
        if request.method not in SAFE_METHODS:
            browser.origins.check(request)
        identity = await browser.current(request)
        if identity is None:
            raise Unauthorized(
                "Session has expired or ended; log in again",
                token_presented=True,
                reason="session_expired",
            )
        return identity

    def ended(self, request: web.Request) -> None:
        """The caller's own session is over: a browser's cookies are cleared with the answer."""
        if self._browser is not None and "Authorization" not in request.headers:
            self._browser.end(request, self._browser.cookies.read(request).cookies)
