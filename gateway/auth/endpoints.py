"""The gateway's own user endpoints: login, refresh, logout and the JWKS document."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from aiohttp import web

from ..config.names import is_valid_username
from ..errors import (
    BadRequest,
    GatewayError,
    MethodNotAllowed,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from ..request_keys import CLIENT, ROUTE_NAME, USER_ID
from ..storage import UserStore
from ..telemetry.metrics import GatewayMetrics
from .account import AccountEndpoints
from .audit import LOGIN_FAILED, LOGIN_SUCCEEDED, LOGOUT, RATE_LIMITED, AuditTrail
from .bearer import bearer_token
from .json_body import read_json_object, require_string
from .passwords import PasswordHasher
from .rate_limits import LoginLimiter
from .sessions import BAD_CREDENTIALS, SessionService, client_of
from .tokens import ACCESS, REFRESH, TokenPair, TokenService

__all__ = ["UserEndpoints"]

log = logging.getLogger(__name__)
# RFC 6749 §5.1: token responses must not be cached.
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True, kw_only=True, slots=True)
class UserEndpoints:
    """The handlers of /user/login, /user/refresh, /user/logout and the JWKS document, with the
    services they use passed in."""

    sessions: SessionService
    passwords: PasswordHasher
    store: UserStore
    limiter: LoginLimiter
    tokens: TokenService
    metrics: GatewayMetrics
    account: AccountEndpoints
    audit: AuditTrail

    async def login(self, request: web.Request) -> web.Response:
        """POST {username, password} -> a token pair. Unknown user and wrong password look alike."""
        if request.method != "POST":
            raise MethodNotAllowed("Use POST to log in", allowed=frozenset({"POST"}))
        request[ROUTE_NAME] = "login"
        outcomes = self.metrics.logins
        try:
            body = await read_json_object(request)
            username = require_string(body, "username", max_length=256)
            password = require_string(body, "password", max_length=1024)
        except GatewayError:
            outcomes.labels("bad_request").inc()
            raise
        return _token_response(await self.log_in(request, username, password))

    async def log_in(self, request: web.Request, username: str, password: str) -> TokenPair:
        """Check the credentials under the login limits and start a session: the JSON login and
        the login page's form both come here, so both count against the same limits."""
        outcomes = self.metrics.logins
        limiter, address = self.limiter, request[CLIENT]
        try:
            # Counted as a failure from here, before any hashing: however many attempts run at
            # once, no more than the limit get a verdict on their password.
            attempt = await limiter.reserve(username, address)
        except TooManyRequests:
            outcomes.labels("rate_limited").inc()
            self.audit.record(RATE_LIMITED, request, outcome="refused", detail="login")
            raise
        try:
            pair = await self._authenticate_and_start_session(request, username, password)
        except Unauthorized as exc:
            outcomes.labels("invalid_credentials").inc()
            # Only an existing user's name: an unknown one may be a password typed in the
            # wrong field.
            known = exc.reason != "unknown_user"
            self.audit.record(
                LOGIN_FAILED,
                request,
                outcome="failure",
                user_id=request.get(USER_ID) if known else None,
                username=username if known else "",
                detail=exc.reason,
            )
            raise  # the reservation stands as the failure
        except GatewayError:
            # No verdict (the database or the hashing queue was unavailable): not a failure.
            await limiter.abandoned(attempt)
            raise
        outcomes.labels("success").inc()
        await limiter.succeeded(attempt)
        self.audit.record(
            LOGIN_SUCCEEDED,
            request,
            user_id=request.get(USER_ID),
            username=username,
            session_id=self.tokens.session_of(pair.access_token, use=ACCESS) or "",
        )
        return pair

    async def _authenticate_and_start_session(
        self, request: web.Request, username: str, password: str
    ) -> TokenPair:
        passwords, store = self.passwords, self.store
        user = await store.get_user_by_name(username) if is_valid_username(username) else None
        # The reason is for the audit trail only: the client gets one answer for all of them.
        if user is None:
            await passwords.verify_dummy(password)
            raise Unauthorized(BAD_CREDENTIALS, token_presented=False, reason="unknown_user")
        request[USER_ID] = str(user.id)
        if not await passwords.verify(user.password_hash, password):
            raise Unauthorized(BAD_CREDENTIALS, token_presented=False, reason="wrong_password")
        if user.disabled:
            raise Unauthorized(BAD_CREDENTIALS, token_presented=False, reason="user_disabled")
        if passwords.needs_rehash(user.password_hash):
            rehashed = await passwords.hash(password)
            if await store.set_password_hash(user.id, rehashed, replacing=user.password_hash):
                user = dataclasses.replace(user, password_hash=rehashed)
        return await self.sessions.login(user, client_of(request))

    async def refresh(self, request: web.Request) -> web.Response:
        """GET ?refresh_token=... or POST {refresh_token} -> a new pair (the old token retires)."""
        request[ROUTE_NAME] = "refresh"
        if request.method == "GET":
            values = request.query.getall("refresh_token", [])
            if len(values) != 1 or not values[0]:
                raise BadRequest("Give exactly one non-empty 'refresh_token' query parameter")
            token = values[0]
        elif request.method == "POST":
            token = require_string(await read_json_object(request), "refresh_token")
        else:
            raise MethodNotAllowed("Use GET or POST to refresh", allowed=frozenset({"GET", "POST"}))
        outcomes = self.metrics.refreshes
        try:
            refreshed = await self.sessions.refresh(token, client_of(request))
        except Unauthorized as exc:
            outcomes.labels(exc.reason).inc()
            if exc.reason == "reuse_detected":
                self.audit.reuse_detected(request, self.tokens, token)
            raise
        outcomes.labels(refreshed.outcome).inc()
        request[USER_ID] = str(refreshed.user_id)
        return _token_response(refreshed.pair)

    async def logout(self, request: web.Request) -> web.Response:
        """POST {refresh_token}, or an access token in Authorization: end that session;
        POST {"all": true} by Bearer token or cookie: end every session of the caller.

        As in RFC 7009, an unknown, expired or already revoked token is answered with success too:
        the caller's goal (that token no longer works) holds either way.
        """
        request[ROUTE_NAME] = "logout"
        if request.method != "POST":
            raise MethodNotAllowed("Use POST to log out", allowed=frozenset({"POST"}))
        tokens = self.tokens
        session_id: str | None = None
        # Expired tokens still end their session: a user coming back after a while to log out
        # holds an expired access token, and the session must not outlive the click.
        if request.body_exists:
            body = await read_json_object(request)
            everywhere = body.get("all", False)
            if not isinstance(everywhere, bool):
                raise BadRequest("'all' must be true (end every session) or false")
            if everywhere:
                return await self.account.logout_everywhere(request)
            token = require_string(body, "refresh_token")
            session_id = tokens.session_of(token, use=REFRESH)
        elif "Authorization" in request.headers:
            try:
                access = bearer_token(request.headers)
            except GatewayError:
                access = None
            session_id = tokens.session_of(access, use=ACCESS) if access else None
        else:
            raise BadRequest(
                'Send {"refresh_token": ...} as JSON, '
                "or the access token as 'Authorization: Bearer'"
            )
        if session_id is not None:
            await self.end_session(request, session_id)
        return web.json_response({"message": "Logged out"}, headers=_NO_STORE)

    async def end_session(self, request: web.BaseRequest, session_id: str) -> None:
        """Log out one session, audited when it was live (the JSON and the cookie logout)."""
        if await self.sessions.logout(session_id):
            self.audit.record(LOGOUT, request, session_id=session_id)

    async def jwks(self, request: web.Request) -> web.Response:
        request[ROUTE_NAME] = "jwks"
        document = self.tokens.jwks
        if document is None:
            raise NotFound(
                "Tokens are signed with a shared secret (HS256): there are no public keys"
            )
        return web.json_response(document, headers={"Cache-Control": "public, max-age=300"})


def _token_response(pair: TokenPair) -> web.Response:
    return web.json_response(pair.as_json(), headers=_NO_STORE)
