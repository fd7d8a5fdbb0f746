"""Which origins a request counts as the gateway's own, for the CSRF rule of cookie sessions
and for return URLs.

A request's own origin is its Host with its scheme (behind a trusted proxy, X-Forwarded-Host and
-Proto), and the same host over https (a TLS-terminating proxy that sets no X-Forwarded-Proto
must not make the browser's own origin look foreign). `browser.trusted_origins` adds others.

The CSRF rule: an unsafe request authenticated by cookie must carry an `Origin` that is one of
those, or, without one (or with `Origin: null`), `Sec-Fetch-Site: same-origin`. Browsers send
one of the two on every POST, PUT, PATCH and DELETE, so a request with neither is refused.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from aiohttp import web

from ..errors import Forbidden
from ..networks import IpNetwork, address_in

__all__ = ["OriginPolicy", "normalize_origin"]

_ORIGIN = re.compile(
    r"(?P<scheme>https?)://(?P<host>[a-z0-9.\-]+|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]{1,5}))?"
)
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def normalize_origin(text: str) -> str | None:
    """`scheme://host[:port]` in lower case without a default port; None when not an origin."""
    match = _ORIGIN.fullmatch(text.strip().lower())
    if match is None:
        return None
    scheme, host, port = match.group("scheme", "host", "port")
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{int(port)}"


class OriginPolicy:
    """Built once from config; tells a request's own origins and checks unsafe ones."""

    def __init__(self, trusted: Collection[str], trusted_proxies: Sequence[IpNetwork]) -> None:
        self._trusted = frozenset(
            origin for origin in map(normalize_origin, trusted) if origin is not None
        )
        self._trusted_proxies = tuple(trusted_proxies)

    @property
    def trusted(self) -> frozenset[str]:
        return self._trusted

    def own(self, request: web.BaseRequest) -> frozenset[str]:
        """The origins this request's browser may have come from while on the gateway."""
        host, scheme = request.host, request.scheme
        if address_in(request.remote, self._trusted_proxies):
            forwarded_host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
            forwarded_proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip()
            host = forwarded_host or host
            scheme = forwarded_proto or scheme
        return frozenset(
            origin
            for origin in (
                normalize_origin(f"{scheme}://{host}"),
                normalize_origin(f"https://{host}"),
            )
            if origin is not None
        )

    def allows(self, request: web.BaseRequest, origin: str) -> bool:
        """Whether `origin` is the request's own or a trusted one."""
        normalized = normalize_origin(origin)
        return normalized is not None and (
            normalized in self._trusted or normalized in self.own(request)
        )

    def check(self, request: web.BaseRequest) -> None:
        """403 unless the request comes from the gateway's own pages or a trusted origin."""
        origins = request.headers.getall("Origin", ())
        if len(origins) > 1:
            raise Forbidden("Cross-origin request refused: more than one Origin header")
        # `Origin: null` also comes from the site's own pages under `Referrer-Policy:
        # no-referrer`; Fetch Metadata then tells whether the request is same-origin.
        if origins and origins[0] != "null":
            if not self.allows(request, origins[0]):
                raise Forbidden(
                    f"Cross-origin request refused: {origins[0][:100]!r} is not this site"
                )
            return
        if request.headers.get("Sec-Fetch-Site") != "same-origin":
            raise Forbidden(
                "Cross-origin request refused: a request by session cookie must come with "
                "the Origin header of this site"
            )
