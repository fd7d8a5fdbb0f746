"""Finding and checking the access token of a request: `Authorization: Bearer <token>`, and for
WebSocket handshakes (where browsers cannot set headers) a query parameter or subprotocol."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import web
from multidict import CIMultiDictProxy

from ..errors import Unauthorized
from .revocation import RevocationView
from .tokens import Identity, TokenService

__all__ = ["WebSocketCredentials", "authenticate", "bearer_token", "websocket_credentials"]

# `new WebSocket(url, ["bearer", token, ...app protocols])`: the marker, then the token.
WEBSOCKET_AUTH_PROTOCOL = "bearer"


def bearer_token(headers: CIMultiDictProxy[str]) -> str | None:
    """The token of exactly one `Authorization: Bearer <token>`; None when there is none."""
    values = headers.getall("Authorization", ())
    if not values:
        return None
    if len(values) > 1:
        raise Unauthorized(
            "Send exactly one Authorization header", token_presented=True, reason="malformed"
        )
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized(
            "Authorization must use the Bearer scheme", token_presented=False, reason="malformed"
        )
    token = token.strip()
    if not token or " " in token:
        raise Unauthorized(
            "Authorization must be 'Bearer <token>'", token_presented=True, reason="malformed"
        )
    return token


def authenticate(token: str | None, tokens: TokenService, revocations: RevocationView) -> Identity:
    """The verified identity of a live session, or 401 saying what is wrong."""
    if token is None:
        raise Unauthorized("Missing bearer token", token_presented=False, reason="missing")
    identity = tokens.verify_access(token)
    if revocations.is_revoked(identity.session_id):
        raise Unauthorized(
            "Session has been revoked; log in again", token_presented=True, reason="revoked"
        )
    return identity


@dataclass(frozen=True, slots=True)
class WebSocketCredentials:
    token: str | None
    # What is left to offer the upstream, and what to answer the client if it picks nothing.
    protocols: tuple[str, ...]
    auth_protocol: str | None
    # The client's query string without the token parameter.
    raw_query: str


def websocket_credentials(request: web.Request, parameter: str) -> WebSocketCredentials:
    """The token of a WebSocket handshake from Authorization, the query, or the subprotocols.

    Never raises: a malformed or ambiguous token is no token (a protected route then says 401).
    """
    try:
        token = bearer_token(request.headers)
    except Unauthorized:
        token = None
    offered = [
        p.strip()
        for value in request.headers.getall("Sec-WebSocket-Protocol", ())
        for p in value.split(",")
        if p.strip()
    ]
    auth_protocol = None
    if WEBSOCKET_AUTH_PROTOCOL in offered:
        at = offered.index(WEBSOCKET_AUTH_PROTOCOL)
        token = token or (offered[at + 1] if at + 1 < len(offered) else None)
        del offered[at : at + 2]
        auth_protocol = WEBSOCKET_AUTH_PROTOCOL
    kept: list[str] = []
    from_query: list[str] = []
    for item in filter(None, request.rel_url.raw_query_string.split("&")):
        name, _, value = item.partition("=")
        if name == parameter:
            from_query.append(unquote(value))
        else:
            kept.append(item)
    if token is None and len(from_query) == 1:
        token = from_query[0]
    return WebSocketCredentials(token, tuple(offered), auth_protocol, "&".join(kept))
