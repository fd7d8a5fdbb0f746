"""The header policy between client and upstream, in both directions.

- Hop-by-hop headers and any header named in ``Connection`` are dropped both ways; ``Connection``
  cannot drop a header the gateway sets, nor ``Content-Length`` / ``Content-Type``.
- Identity headers from the client are dropped in every spelling (any case, ``_`` for ``-``) and set
  only from a verified token: exactly one value each, or none.
- ``Authorization`` is forwarded only when the route asks for it.
- ``Host`` is the upstream's own unless the route preserves the client's.
- Headers some frameworks route or pick the scheme by (``X-Original-URL``, ``X-Rewrite-URL``,
  ``X-HTTP-Method-Override``, ``X-Forwarded-Port/-Prefix/-Ssl``...) never come from clients.
- ``X-Forwarded-For/-Proto/-Host`` are set by the gateway; the client's values are kept only when
  the peer is a trusted proxy. ``Forwarded`` and ``X-Real-IP`` from clients are dropped.
- The request id replaces any the client sent (it was validated or generated at the edge).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from ..auth.tokens import Identity
from ..config import IdentityHeaders, RouteConfig
from ..networks import IpNetwork, address_in

__all__ = ["HeaderPolicy"]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Dropped from requests: the gateway sets its own, or answered them itself (Expect).
_REQUEST_DROPPED = frozenset(
    {
        "host",
        "expect",
        "forwarded",
        "x-real-ip",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        # Headers some frameworks route, rewrite or pick the scheme by: never from a client.
        "x-original-url",
        "x-rewrite-url",
        "x-original-uri",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-ssl",
        "x-forwarded-scheme",
        "x-forwarded-server",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    }
)
# The WebSocket handshake is redone between gateway and upstream.
_WEBSOCKET_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "sec-websocket-accept",
    }
)
# Framing that naming it in Connection may not remove (either direction).
_NEVER_DROPPED_BY_CONNECTION = frozenset({"content-length", "content-type"})


def connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    """Header names listed in Connection: hop-by-hop for this one message."""
    values = headers.getall("Connection", ())
    return {token.strip().lower() for value in values for token in value.split(",")}


def fold(name: str) -> str:
    """The spelling a backend might fold a header name to (case, '_' for '-', spaces)."""
    return name.strip().lower().replace("_", "-")


class HeaderPolicy:
    """Built once from config; applied to every forwarded request and response."""

    def __init__(
        self,
        identity_headers: IdentityHeaders,
        trusted_proxies: Sequence[IpNetwork],
        *,
        request_id_header: str,
        gateway_owns_cors: bool,
    ) -> None:
        self._identity = identity_headers
        self._dropped_folded = frozenset(
            fold(n) for n in (*identity_headers.names, request_id_header)
        )
        self._request_id_header = request_id_header
        self._trusted = tuple(trusted_proxies)
        self._gateway_owns_cors = gateway_owns_cors

    def upstream_request(
        self,
        request: web.Request,
        route: RouteConfig,
        identity: Identity | None,
        request_id: str,
        *,
        websocket: bool = False,
    ) -> CIMultiDict[str]:
        """The headers to send upstream for this request."""
        named_in_connection = connection_tokens(request.headers) - _NEVER_DROPPED_BY_CONNECTION
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in request.headers.items():
            lower = name.lower()
            if (
                lower in HOP_BY_HOP
                or lower in _REQUEST_DROPPED
                or lower in named_in_connection
                or lower.startswith("proxy-")
                or fold(lower) in self._dropped_folded
                or (lower == "authorization" and not route.forward_authorization)
                or (websocket and lower in _WEBSOCKET_HANDSHAKE)
            ):
                continue
            headers.add(name, value)
        if route.preserve_host:
            headers["Host"] = request.host
        self._set_forwarded(request, headers)
        headers[self._request_id_header] = request_id
        if identity is not None:
            headers[self._identity.user_id] = identity.user_id
            headers[self._identity.username] = identity.username
            headers[self._identity.roles] = ",".join(identity.roles)
        return headers

    def client_response(
        self, upstream_headers: CIMultiDictProxy[str], response: web.StreamResponse
    ) -> None:
        """Copy the upstream's response headers that may reach the client."""
        named_in_connection = connection_tokens(upstream_headers) - _NEVER_DROPPED_BY_CONNECTION
        for name, value in upstream_headers.items():
            lower = name.lower()
            if (
                lower in HOP_BY_HOP
                or lower in named_in_connection
                or (self._gateway_owns_cors and lower.startswith("access-control-"))
            ):
                continue
            response.headers.add(name, value)

    def _set_forwarded(self, request: web.Request, headers: CIMultiDict[str]) -> None:
        peer = request.remote or ""
        client = request.headers
        if address_in(peer, self._trusted):
            prior = ", ".join(client.getall("X-Forwarded-For", ()))
            headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
            headers["X-Forwarded-Proto"] = client.get("X-Forwarded-Proto", request.scheme)
            headers["X-Forwarded-Host"] = client.get("X-Forwarded-Host", request.host)
        else:
            headers["X-Forwarded-For"] = peer
            headers["X-Forwarded-Proto"] = request.scheme
            headers["X-Forwarded-Host"] = request.host
