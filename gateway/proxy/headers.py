"""The header policy between client and upstream, in both directions.

- Hop-by-hop headers and any header named in ``Connection`` are dropped both ways; ``Connection``
  cannot drop a header the gateway sets, nor ``Content-Length`` / ``Content-Type``.
- Every header the gateway drops or sets is matched in every spelling a backend might fold to the
  same name (any case, ``_`` for ``-``): CGI/WSGI-style servers turn both ``X-Forwarded-For`` and
  ``X_Forwarded_For`` into ``HTTP_X_FORWARDED_FOR``, and ``Transfer_Encoding`` into framing.
- Identity headers from the client are dropped and set only from a verified token: exactly one
  value each, or none. So is the signed identity assertion (``X-Gateway-Assertion``), on the
  routes that send it; a client's copy is dropped on every route.
- Identity-like headers other auth proxies set (``Remote-User``, ``X-Forwarded-User``,
  ``X-Auth-Request-*``...) are dropped per route (``drop_request_headers``).
- ``Authorization`` is forwarded only when the route asks for it.
- ``Host`` is the upstream's own unless the route preserves the client's.
- Headers some frameworks route or pick the scheme by (``X-Original-URL``, ``X-Rewrite-URL``,
  ``X-HTTP-Method-Override``, ``X-Forwarded-Port/-Prefix/-Ssl``, forward auth's
  ``X-Original-URI/-Method`` and ``X-Forwarded-Uri/-Method``...) never come from clients.
- ``X-Forwarded-For/-Proto/-Host`` are set by the gateway; the client's values are kept only when
  the peer is a trusted proxy. ``Forwarded`` and ``X-Real-IP`` from clients are dropped.
- The request id replaces any the client sent (it was validated or generated at the edge).
- The gateway's own cookies (cookie sessions) are removed from ``Cookie``; the app's own stay.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from multidict import CIMultiDict

from ..auth.assertions import AssertionSigner
from ..auth.cookies import strip_cookies
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
        # Forward auth's spellings of an original request (an ingress behind the gateway, or
        # an app that reads them, must not take a client's).
        "x-original-method",
        "x-forwarded-uri",
        "x-forwarded-method",
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
# Dropped from responses: the gateway sets its own (the request id is added per policy).
# Server: the upstream's software and version are nobody's business (nginx hides its own).
_RESPONSE_DROPPED = frozenset({*HOP_BY_HOP, "server"})
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


def fold(name: str) -> str:
    """The spelling a backend might fold a header name to (case, '_' for '-', spaces)."""
    return name.strip().lower().replace("_", "-")


RawHeaders = list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]
# Distinct header names whose static verdict is remembered (bounded: names come from clients).
_VERDICTS_KEPT = 4096


def _matches(folded: str, patterns: tuple[str, ...]) -> bool:
    """Whether a folded name is one of `patterns` (each exact, or a prefix ending in '*')."""
    for pattern in patterns:
        wanted = fold(pattern)
        if (wanted.endswith("*") and folded.startswith(wanted[:-1])) or folded == wanted:
            return True
    return False


def _fold_raw(name: bytes) -> bytes:
    return name.strip().lower().replace(b"_", b"-")


def _is_connection(name: bytes) -> bool:
    # A parsed name is a token (no spaces), and "connection" has no '-' to spell as '_'.
    return len(name) == 10 and name.lower() == b"connection"


def _connection_tokens(raw: RawHeaders) -> frozenset[bytes]:
    """Header names listed in Connection (folded): hop-by-hop for this one message, beyond
    those that always are (`Connection: keep-alive`, the usual one, names none)."""
    tokens: set[bytes] = set()
    for name, value in raw:
        if _is_connection(name):
            tokens.update(_fold_raw(token) for token in value.split(b","))
    if not tokens:
        return _NO_TOKENS
    return frozenset(tokens) - _NEVER_DROPPED_BY_CONNECTION_RAW - _HOP_BY_HOP_RAW


def _decode(value: bytes) -> str:
    # The same decoding aiohttp's parser uses, so values pass through byte for byte.
    return value.decode("utf-8", "surrogateescape")


_NEVER_DROPPED_BY_CONNECTION_RAW = frozenset(n.encode() for n in _NEVER_DROPPED_BY_CONNECTION)
_HOP_BY_HOP_RAW = frozenset(n.encode() for n in HOP_BY_HOP)
_NO_TOKENS: frozenset[bytes] = frozenset()
_WEBSOCKET_HANDSHAKE_RAW = frozenset(n.encode() for n in _WEBSOCKET_HANDSHAKE)


class HeaderPolicy:
    """Built once from config; applied to every forwarded request and response. Works on the
    raw header bytes, so nothing is decoded or re-encoded on the way through."""

    def __init__(
        self,
        identity_headers: IdentityHeaders,
        trusted_proxies: Sequence[IpNetwork],
        *,
        request_id_header: str,
        gateway_owns_cors: bool,
        gateway_cookies: frozenset[str] = frozenset(),
        assertion_header: str = "X-Gateway-Assertion",
        assertions: AssertionSigner | None = None,
    ) -> None:
        self._identity = identity_headers
        self._assertions = assertions
        # Cookie names that are the gateway's own: never sent upstream.
        self._gateway_cookies = frozenset(name.encode() for name in gateway_cookies)
        self._dropped_folded = frozenset(
            fold(n) for n in (*identity_headers.names, request_id_header, assertion_header)
        )
        self._request_id_header = request_id_header
        self._trusted = tuple(trusted_proxies)
        self._gateway_owns_cors = gateway_owns_cors
        # route name -> (name as sent -> dropped whatever the request), the static part of the
        # policy. A policy lives as long as one route table (it is rebuilt on reload).
        self._verdicts: dict[str, dict[bytes, bool]] = {}
        self._response_dropped = _RESPONSE_DROPPED | {fold(request_id_header)}
        self._response_verdicts: dict[bytes, bool] = {}

    def upstream_head(
        self,
        request: web.Request,
        route: RouteConfig,
        identity: Identity | None,
        request_id: str,
        *,
        request_line: bytes,
        host: str,
        extra: bytes = b"",
    ) -> bytes:
        """The request head to send upstream: the request line, the client's headers the policy
        keeps, the gateway's own (Host, X-Forwarded-*, the request id, the identity), `extra`
        (framing the proxy adds), and the blank line."""
        parts = [request_line]
        for name, value in self._kept(request, route, websocket=False):
            parts += (name, b": ", value, b"\r\n")
        added = self._added(request, route, identity, request_id, host)
        lines = "".join([f"{name}: {value}\r\n" for name, value in added])
        parts += (lines.encode("utf-8", "surrogateescape"), extra, b"\r\n")
        return b"".join(parts)

    def upstream_request(
        self,
        request: web.Request,
        route: RouteConfig,
        identity: Identity | None,
        request_id: str,
        *,
        websocket: bool = False,
    ) -> CIMultiDict[str]:
        """The same headers as a multidict, for the WebSocket client (which sets Host itself)."""
        headers: CIMultiDict[str] = CIMultiDict(
            (_decode(name), _decode(value))
            for name, value in self._kept(request, route, websocket=websocket)
        )
        headers.extend(self._added(request, route, identity, request_id, None))
        return headers

    @staticmethod
    def decoded(raw: RawHeaders) -> CIMultiDict[str]:
        """Raw headers as aiohttp's response headers."""
        return CIMultiDict([(_decode(n), _decode(v)) for n, v in raw])

    def client_headers(self, raw: RawHeaders) -> list[tuple[bytes, bytes]]:
        """The upstream's response headers that may reach the client, as they came."""
        kept: list[tuple[bytes, bytes]] = []
        named: list[bytes] = []
        verdicts = self._response_verdicts
        for name, value in raw:
            dropped = verdicts.get(name)
            if dropped is None:
                dropped = self._response_header_dropped(name)
            if not dropped:
                kept.append((name, value))
            elif _is_connection(name):
                named.append(value)
        if named:
            tokens = _connection_tokens([(b"connection", value) for value in named])
            if tokens:  # rare: headers the upstream made hop-by-hop for this message
                kept = [(n, v) for n, v in kept if _fold_raw(n) not in tokens]
        return kept

    def _kept(
        self, request: web.Request, route: RouteConfig, *, websocket: bool
    ) -> list[tuple[bytes, bytes]]:
        raw = request.raw_headers
        # (The parsed headers answer "is there a Connection header?" in C, case-insensitively:
        # the same question, since "connection" has no '-' to spell as '_'.)
        named_in_connection = (
            _connection_tokens(raw) if "Connection" in request.headers else _NO_TOKENS
        )
        verdicts = self._verdicts.get(route.name)
        if verdicts is None:
            verdicts = self._verdicts[route.name] = {}
        kept = []
        for name, value in raw:
            dropped = verdicts.get(name)
            if dropped is None:
                dropped = self._always_dropped(name, route, verdicts)
            if dropped:
                continue
            lower = name.lower()
            if (
                (named_in_connection and _fold_raw(name) in named_in_connection)
                or (lower == b"authorization" and not route.forward_authorization)
                or (websocket and _fold_raw(name) in _WEBSOCKET_HANDSHAKE_RAW)
            ):
                continue
            if lower == b"cookie" and self._gateway_cookies:
                value = strip_cookies(value, self._gateway_cookies)
                if not value:
                    continue
            kept.append((name, value))
        return kept

    def _always_dropped(self, name: bytes, route: RouteConfig, verdicts: dict[bytes, bool]) -> bool:
        folded = fold(name.decode("latin-1"))
        dropped = (
            folded in HOP_BY_HOP
            or folded in _REQUEST_DROPPED
            or folded.startswith("proxy-")
            or folded in self._dropped_folded
            or _matches(folded, route.drop_request_headers)
        )
        if len(verdicts) < _VERDICTS_KEPT:
            verdicts[name] = dropped
        return dropped

    def _response_header_dropped(self, name: bytes) -> bool:
        folded = fold(name.decode("latin-1"))
        dropped = folded in self._response_dropped or (
            self._gateway_owns_cors and folded.startswith("access-control-")
        )
        if len(self._response_verdicts) < _VERDICTS_KEPT:
            self._response_verdicts[name] = dropped
        return dropped

    def _added(
        self,
        request: web.Request,
        route: RouteConfig,
        identity: Identity | None,
        request_id: str,
        host: str | None,
    ) -> list[tuple[str, str]]:
        added = []
        if route.preserve_host:
            added.append(("Host", request.host))
        elif host is not None:
            added.append(("Host", host))
        added += self._forwarded(request)
        added.append((self._request_id_header, request_id))
        if identity is not None:
            added += (
                (self._identity.user_id, identity.user_id),
                (self._identity.username, identity.username),
                (self._identity.roles, ",".join(identity.roles)),
            )
            assertions = self._assertions
            if assertions is not None and assertions.wanted(route):
                added.append((assertions.header, assertions.assertion(identity, route.upstream)))
        return added

    def _forwarded(self, request: web.Request) -> list[tuple[str, str]]:
        peer = request.remote or ""
        if not address_in(peer, self._trusted):
            return [
                ("X-Forwarded-For", peer),
                ("X-Forwarded-Proto", request.scheme),
                ("X-Forwarded-Host", request.host),
            ]
        client = request.headers
        prior = ", ".join(client.getall("X-Forwarded-For", ()))
        return [
            ("X-Forwarded-For", f"{prior}, {peer}" if prior else peer),
            ("X-Forwarded-Proto", client.get("X-Forwarded-Proto", request.scheme)),
            ("X-Forwarded-Host", client.get("X-Forwarded-Host", request.host)),
        ]
