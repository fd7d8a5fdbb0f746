"""What happens to every request before routing and to every response before it is sent:
request ids, header-block limits (431), CORS preflights and CORS response headers, HSTS, and
`Connection: close` while draining."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from aiohttp import HttpVersion10, HttpVersion11, web

from .config import CorsConfig, ServerConfig
from .draining import Drain
from .errors import HeaderBlockTooLarge, OriginRefused, VersionNotSupported, shown
from .networks import client_address
from .request_keys import CLIENT, REQUEST_ID, learned, noted

__all__ = ["EdgePolicy"]

ResponseHook = Callable[[web.BaseRequest, web.StreamResponse], None]
SERVER_NAME = "auth-gateway"
_HTTP1 = (HttpVersion10, HttpVersion11)
_RELAYED_LINES = f"Server: {SERVER_NAME}\r\n".encode()
_OWN_LINES = _RELAYED_LINES + b"X-Content-Type-Options: nosniff\r\n"
_HSTS = ("Strict-Transport-Security",)
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class EdgePolicy:
    """Built once from config; `middleware` and `on_prepare` are what the app installs."""

    def __init__(self, server: ServerConfig, cors: CorsConfig, drain: Drain) -> None:
        self._drain = drain
        self._request_id_header = server.request_id_header
        self._trusted_proxies = server.trusted_proxies
        self._max_header_bytes = server.max_header_bytes
        self._max_headers = server.max_headers
        self._cors = cors
        self._allow_methods = ", ".join(cors.allowed_methods)
        self._allow_headers = ", ".join(cors.allowed_headers)
        self._allowed_header_names = frozenset(h.lower() for h in cors.allowed_headers)
        self._expose_headers = ", ".join(cors.exposed_headers)
        # Only over TLS: a browser ignores it on plain HTTP, and it must not come from there.
        self._hsts = server.tls.hsts_header
        self._request_ids = _RequestIds()
        # What head_lines starts with. With CORS, as on_prepare: the answer depends on Origin,
        # which a cache must key on.
        vary = b"Vary: Origin\r\n" if cors.enabled else b""
        self._own_lines, self._relayed_lines = _OWN_LINES + vary, _RELAYED_LINES + vary
        # Other rooms' last words on every response (cookie sessions' Set-Cookie), called from
        # the one on_response_prepare callback: each callback aiohttp awaits costs a coroutine.
        self._also: tuple[ResponseHook, ...] = ()

    def admit(self, request: web.Request) -> web.Response | None:
        """Before routing: name the request, check its header block; answer a CORS preflight
        here (returned), or return None to go on to the handler."""
        self.name(request)
        if request.version not in _HTTP1:
            # The parser takes any HTTP/x.y; an "HTTP/2.0" line is not HTTP/2, and answering
            # it in kind would tell a front proxy a protocol was agreed that was not.
            # The answer's status line repeats the request's version: make it HTTP/1.1 (aiohttp
            # has no public way; `version` is a cached property over `_version`).
            request._version = HttpVersion11
            request._cache.pop("version", None)
            raise VersionNotSupported("Only HTTP/1.0 and HTTP/1.1 are served on this port")
        self.check_header_block(request)
        if self._cors.enabled and _is_preflight(request):
            return self._preflight(request)
        return None

    def name(self, request: web.BaseRequest) -> None:
        """The request's id and client address. (With `check_header_block`, all `admit` does
        to an HTTP/1.1 request that is no CORS preflight: what the lane takes.)"""
        headers = request.headers
        offered = headers.get(self._request_id_header)
        notes = noted(request)
        notes[REQUEST_ID] = (
            offered
            if offered is not None and _VALID_REQUEST_ID.fullmatch(offered)
            else self._request_ids.next()
        )
        remote = request.remote
        notes[CLIENT] = (
            client_address(remote, headers.getall("X-Forwarded-For", []), self._trusted_proxies)
            if self._trusted_proxies
            else remote or ""
        )

    def also_prepare(self, hook: ResponseHook) -> None:
        """Have `on_prepare` call `hook(request, response)` too, after its own headers."""
        self._also = (*self._also, hook)

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Runs for every response, proxied or not, just before its headers are sent."""
        # A bare name: aiohttp's default names the Python and aiohttp versions.
        response.headers["Server"] = SERVER_NAME
        if not getattr(response, "from_upstream", False):
            response.headers["X-Content-Type-Options"] = "nosniff"
        request_id = learned(request).get(REQUEST_ID)
        if request_id is not None:
            response.headers[self._request_id_header] = request_id
        if self._cors.enabled:
            self._add_cors_headers(request, response)
        if self._hsts and request.secure:
            # The gateway's, replacing an upstream's own: one policy for the whole origin.
            response.headers["Strict-Transport-Security"] = self._hsts
        if self._drain.draining:
            self._drain.close_after(response)
        for hook in self._also:
            hook(request, response)

    def lane_takes(self, request: web.BaseRequest) -> bool:
        """Whether `head_lines` is all `on_prepare` would add to this request's answer: not
        with CORS (its headers depend on the Origin; the app's path writes them)."""
        return not (self._cors.enabled and "Origin" in request.headers)

    def head_lines(self, request: web.BaseRequest, *, own: bool) -> bytes:
        """What `on_prepare` adds, as head lines, for an answer written without a response
        object (gateway.lane); `own`: the gateway's answer, not an upstream's."""
        lines = self._own_lines if own else self._relayed_lines
        request_id = learned(request).get(REQUEST_ID)
        if request_id is not None:
            lines += f"{self._request_id_header}: {request_id}\r\n".encode("latin-1")
        if self._hsts and request.secure:
            lines += f"Strict-Transport-Security: {self._hsts}\r\n".encode("latin-1")
        return lines

    def replaced_upstream_headers(self, request: web.BaseRequest) -> tuple[str, ...]:
        """An upstream's headers that `head_lines` writes the gateway's own of (on_prepare
        replaces them): HSTS over TLS, one policy for the whole origin."""
        return _HSTS if self._hsts and request.secure else ()

    @property
    def draining(self) -> bool:
        """While the gateway drains, every answer closes its connection."""
        return self._drain.draining

    def check_header_block(self, request: web.BaseRequest, head_size: int | None = None) -> None:
        """431 for more headers, or more header bytes, than the config allows. `head_size`:
        the request head's length, when known, which spares counting in the common case."""
        headers = request.raw_headers
        if len(headers) > self._max_headers:
            raise HeaderBlockTooLarge(
                f"Too many request headers ({len(headers)}; the limit is {self._max_headers})"
            )
        # Each header line is at least its name, its value and 3 bytes (":" and CRLF): what
        # is counted below is at most the head's length plus one per header.
        if head_size is not None and head_size + len(headers) <= self._max_header_bytes:
            return
        size = sum(len(name) + len(value) + 4 for name, value in headers)
        if size > self._max_header_bytes:
            raise HeaderBlockTooLarge(
                f"Request headers are too large ({size} bytes; the limit is "
                f"{self._max_header_bytes})"
            )

    def _preflight(self, request: web.Request) -> web.Response:
        origin = request.headers["Origin"]
        if not self._cors.allows(origin):
            raise OriginRefused(f"Origin {shown(origin)} is not allowed")
        method = request.headers["Access-Control-Request-Method"].strip().upper()
        if method not in self._cors.allowed_methods:
            raise OriginRefused(f"Method {shown(method)} is not allowed for cross-origin requests")
        asked = {
            h.strip().lower()
            for h in request.headers.get("Access-Control-Request-Headers", "").split(",")
            if h.strip()
        }
        refused = sorted(asked - self._allowed_header_names)
        if refused:
            raise OriginRefused(
                f"Header(s) {shown(', '.join(refused))} are not allowed for cross-origin requests"
            )
        # The Allow-Origin etc. headers are added by on_prepare like on any response.
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": self._allow_methods,
                "Access-Control-Allow-Headers": self._allow_headers,
                "Access-Control-Max-Age": str(self._cors.max_age),
            },
        )

    def _add_cors_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        # (The proxy drops an upstream's own Access-Control-* headers: the gateway owns CORS.)
        response.headers.add("Vary", "Origin")
        origin = request.headers.get("Origin")
        if origin is None or not self._cors.allows(origin):
            return
        response.headers["Access-Control-Allow-Origin"] = (
            "*"
            if "*" in self._cors.allowed_origins and not self._cors.allow_credentials
            else origin
        )
        if self._cors.allow_credentials:
            response.headers["Access-Control-Allow-Credentials"] = "true"
        if self._expose_headers:
            response.headers["Access-Control-Expose-Headers"] = self._expose_headers


class _RequestIds:
    """Fresh request ids: 128 random bits as 32 hex digits, like uuid4().hex. The bits come
    from os.urandom 64 ids at a time: one getrandom call per request cost 0.7 us idle and
    2-3 us on a loaded machine (a syscall), a slice of a buffer costs 0.3 us. (A per-process
    prefix and a counter would be cheaper still, but would tell every client how many
    requests the gateway serves.)"""

    _BATCH = 16 * 64

    def __init__(self) -> None:
        self._hex = ""
        self._at = 0

    def next(self) -> str:
        at = self._at
        if at >= len(self._hex):
            self._hex, at = os.urandom(self._BATCH).hex(), 0
        self._at = at + 32
        return self._hex[at : at + 32]


def _is_preflight(request: web.Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )
