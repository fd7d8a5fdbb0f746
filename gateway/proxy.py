"""Forwarding: one pooled client session per upstream, streaming bodies both ways.

Header policy (README, "What the upstream receives"):
- hop-by-hop headers and any header named in ``Connection`` are dropped in both directions;
- identity headers from the client are dropped in every spelling (any case, ``_`` for ``-``) and
  set only from a verified token;
- ``Authorization`` is forwarded only when the route asks for it;
- ``Host`` is the upstream's own; ``X-Forwarded-For/-Proto/-Host`` are set by the gateway, keeping
  the client's values only when the peer is a configured trusted proxy; ``Forwarded`` and
  ``X-Real-IP`` from clients are dropped.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .config import IdentityHeaders, IpNetwork, RouteConfig, UpstreamConfig
from .errors import BadGateway, GatewayTimeout
from .tokens import Identity

__all__ = ["Proxy"]

log = logging.getLogger(__name__)

_HOP_BY_HOP = frozenset(
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
    }
)
# Framing a client may not remove by naming it in Connection.
_NEVER_DROPPED_BY_CONNECTION = frozenset({"content-length", "content-type"})
_CHUNK = 64 * 1024


def _connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    """Header names listed in Connection: hop-by-hop for this one message."""
    values = headers.getall("Connection", ())
    return {token.strip().lower() for value in values for token in value.split(",")}


def _fold(name: str) -> str:
    """The spelling a backend might fold a header name to (case, '_' for '-', spaces)."""
    return name.strip().lower().replace("_", "-")


class Proxy:
    """Forwards a request to a route's upstream and streams the answer back."""

    def __init__(
        self,
        upstreams: Mapping[str, UpstreamConfig],
        identity_headers: IdentityHeaders,
        trusted_proxies: Sequence[IpNetwork],
    ) -> None:
        self._upstreams = dict(upstreams)
        self._identity = identity_headers
        self._identity_folded = frozenset(_fold(n) for n in identity_headers.names)
        self._trusted = tuple(trusted_proxies)
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    async def start(self) -> None:
        for name, upstream in self._upstreams.items():
            connector = aiohttp.TCPConnector(
                limit=upstream.max_connections, enable_cleanup_closed=True
            )
            self._sessions[name] = aiohttp.ClientSession(
                connector=connector,
                # Bodies pass through untouched: no decompression, no cookie jar shared
                # between users, no client headers the caller did not send.
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=upstream.connect_timeout,
                    sock_read=upstream.read_timeout,
                ),
            )

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()

    async def forward(
        self, request: web.Request, route: RouteConfig, path: str, identity: Identity | None
    ) -> web.StreamResponse:
        upstream = self._upstreams[route.upstream]
        session = self._sessions[route.upstream]
        url = _upstream_url(upstream.url, path, request.rel_url.raw_query_string)
        headers = self._request_headers(request, route, identity)
        data = request.content if request.body_exists else None
        try:
            async with session.request(
                request.method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                auto_decompress=False,
            ) as upstream_response:
                return await self._relay(request, upstream_response, upstream)
        except TimeoutError:
            raise GatewayTimeout(
                f"Upstream '{upstream.name}' did not answer within {upstream.read_timeout:g}s"
            ) from None
        except aiohttp.ClientConnectorError:
            raise BadGateway(f"Upstream '{upstream.name}' is unreachable") from None
        except aiohttp.ClientError as exc:
            log.warning("upstream %s failed: %s", upstream.name, type(exc).__name__)
            raise BadGateway(f"Upstream '{upstream.name}' failed to answer") from None

    def _request_headers(
        self, request: web.Request, route: RouteConfig, identity: Identity | None
    ) -> CIMultiDict[str]:
        named_in_connection = _connection_tokens(request.headers) - _NEVER_DROPPED_BY_CONNECTION
        headers: CIMultiDict[str] = CIMultiDict()
        for name, value in request.headers.items():
            lower = name.lower()
            if (
                lower in _HOP_BY_HOP
                or lower in _REQUEST_DROPPED
                or lower in named_in_connection
                or lower.startswith("proxy-")
                or _fold(lower) in self._identity_folded
                or (lower == "authorization" and not route.forward_authorization)
            ):
                continue
            headers.add(name, value)
        self._set_forwarded(request, headers)
        if identity is not None:
            headers[self._identity.user_id] = identity.user_id
            headers[self._identity.username] = identity.username
        return headers

    def _set_forwarded(self, request: web.Request, headers: CIMultiDict[str]) -> None:
        peer = request.remote or ""
        client = request.headers
        if self._is_trusted(peer):
            prior = ", ".join(client.getall("X-Forwarded-For", ()))
            headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
            headers["X-Forwarded-Proto"] = client.get("X-Forwarded-Proto", request.scheme)
            headers["X-Forwarded-Host"] = client.get("X-Forwarded-Host", request.host)
        else:
            headers["X-Forwarded-For"] = peer
            headers["X-Forwarded-Proto"] = request.scheme
            headers["X-Forwarded-Host"] = request.host

    def _is_trusted(self, peer: str) -> bool:
        if not self._trusted or not peer:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self._trusted)

    async def _relay(
        self,
        request: web.Request,
        upstream_response: aiohttp.ClientResponse,
        upstream: UpstreamConfig,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=upstream_response.status, reason=upstream_response.reason
        )
        named_in_connection = _connection_tokens(upstream_response.headers)
        for name, value in upstream_response.headers.items():
            lower = name.lower()
            if lower in _HOP_BY_HOP or lower in named_in_connection:
                continue
            response.headers.add(name, value)
        await response.prepare(request)
        try:
            async for chunk in upstream_response.content.iter_chunked(_CHUNK):
                await response.write(chunk)
        except (TimeoutError, aiohttp.ClientError) as exc:
            # The status line is already sent: all we can do is cut the stream so the client
            # sees an incomplete body instead of a silently truncated one.
            log.warning(
                "upstream %s broke off its response body: %s", upstream.name, type(exc).__name__
            )
            if request.transport is not None:
                request.transport.close()
            return response
        except ConnectionResetError:
            # The client went away; leaving the block releases the upstream connection.
            return response
        await response.write_eof()
        return response


def _upstream_url(base: URL, path: str, raw_query: str) -> URL:
    """The upstream's base URL (which may carry a path prefix) + the normalized path + the query
    exactly as the client sent it."""
    return URL.build(
        scheme=base.scheme,
        host=base.raw_host or "",
        port=base.explicit_port,
        path=base.raw_path.rstrip("/") + path,
        query_string=raw_query,
        encoded=True,
    )
