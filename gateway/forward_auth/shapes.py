"""The original request, read from what each ingress sends the decision endpoint.

- nginx (`auth_request`): `X-Original-URI` and `X-Original-Method`, set in its config
  (deploy/forward-auth/nginx.conf), plus `X-Forwarded-Proto` / `-Host`.
- Traefik (`forwardAuth`) and Caddy (`forward_auth`): `X-Forwarded-Method`, `-Proto`, `-Host`,
  `-Uri`, which they set themselves.
- Envoy (`ext_authz`, HTTP service): the original path appended to the prefix
  `/_gateway/ext-authz`, the original method and Host, and the headers it is allowed to send.

The decision endpoint believes none of this from a peer outside `server.trusted_proxies`. A
request must be of exactly one shape: each header once, and none of the other shape's (a client
behind Traefik that adds `X-Original-URI: /public` must not have it read instead of the path
Traefik saw). Anything else is refused with 403, never guessed.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDictProxy

from ..errors import Forbidden

__all__ = ["EXT_AUTHZ_PREFIX", "Ingress", "OriginalRequest", "from_ext_authz", "from_headers"]

EXT_AUTHZ_PREFIX = "/_gateway/ext-authz"
# An HTTP method is a token (RFC 9110); the proxy takes any, so the decision does too.
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")
_NGINX = ("X-Original-URI", "X-Original-Method")
_FORWARDED = ("X-Forwarded-Uri", "X-Forwarded-Method")


class Ingress(enum.Enum):
    # auth_request accepts only 2xx, 401 and 403: a login redirect is a 401 with Location,
    # and refreshed cookies come also as numbered headers (nginx 1.22's $upstream_http_set_cookie
    # holds only the first Set-Cookie).
    NGINX = "nginx"
    # Traefik and Caddy pass a non-2xx answer to the client as it is (a 302 included).
    FORWARDED = "forwarded"
    # ext_authz too; it also needs every identity header on a 200 to overwrite client copies.
    ENVOY = "envoy"


@dataclass(frozen=True, slots=True)
class OriginalRequest:
    """The request the ingress is asking about."""

    ingress: Ingress
    method: str
    # The path as the client sent it (to be normalized like a proxied one) and the raw query.
    raw_path: str
    query: str

    @staticmethod
    def origin(request: web.BaseRequest) -> tuple[str, str]:
        """The original scheme and host (X-Forwarded-Proto and -Host, else the check's own):
        read only when cookie sessions decide, which is when they matter."""
        headers = request.headers
        scheme = _optional(headers, "X-Forwarded-Proto") or request.scheme
        return scheme, _optional(headers, "X-Forwarded-Host") or request.host


def from_headers(headers: CIMultiDictProxy[str]) -> OriginalRequest:
    """The original request of an nginx, Traefik or Caddy decision request, or 403."""
    nginx = _NGINX[0] in headers or _NGINX[1] in headers
    forwarded = _FORWARDED[0] in headers or _FORWARDED[1] in headers
    if nginx and forwarded:
        nginx_name = next(name for name in _NGINX if name in headers)
        forwarded_name = next(name for name in _FORWARDED if name in headers)
        raise Forbidden(
            f"Ambiguous forward-auth request: both {nginx_name} and {forwarded_name} were sent; "
            "the ingress must clear the other shape's headers"
        )
    if not nginx and not forwarded:
        raise Forbidden(
            "Not a forward-auth request: send X-Original-URI and X-Original-Method (nginx) "
            "or X-Forwarded-Uri and X-Forwarded-Method (Traefik, Caddy)"
        )
    ingress, (uri_name, method_name) = (
        (Ingress.NGINX, _NGINX) if nginx else (Ingress.FORWARDED, _FORWARDED)
    )
    target = _one(headers, uri_name)
    if not target.startswith("/"):
        raise Forbidden(f"{uri_name} must be the request's path and query, starting with '/'")
    if not target.isascii() and not _utf8(target):
        # The ingress passes the request line's bytes as they came; a byte that is not UTF-8
        # reaches us as a surrogate escape, which no path, query or redirect can carry.
        raise Forbidden(f"{uri_name} is not valid UTF-8")
    raw_path, _, query = target.partition("?")
    return OriginalRequest(
        ingress,
        _method(_one(headers, method_name), method_name),
        raw_path,
        query,
    )


def from_ext_authz(request: web.BaseRequest) -> OriginalRequest:
    """The original request of an Envoy ext_authz check: the path after the prefix."""
    raw_path, _, query = request.raw_path.partition("?")
    if not raw_path.startswith(EXT_AUTHZ_PREFIX + "/"):
        raise Forbidden(f"An ext_authz check must be sent to {EXT_AUTHZ_PREFIX}/<original path>")
    return OriginalRequest(
        Ingress.ENVOY,
        request.method,
        raw_path[len(EXT_AUTHZ_PREFIX) :],  # Envoy sends the original Host as the check's
        query,
    )


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _one(headers: CIMultiDictProxy[str], name: str) -> str:
    values = headers.getall(name, ())
    if len(values) != 1:
        raise Forbidden(f"Send exactly one {name} header (got {len(values)})")
    return values[0].strip()


def _optional(headers: CIMultiDictProxy[str], name: str) -> str | None:
    values = headers.getall(name, ())
    if len(values) > 1:
        raise Forbidden(f"Send at most one {name} header (got {len(values)})")
    if not values:
        return None
    return values[0].split(",")[0].strip() or None


def _method(value: str, name: str) -> str:
    if not _METHOD.fullmatch(value):
        raise Forbidden(f"{name} must be an HTTP method")
    return value  # as sent: methods are case-sensitive, as when proxying
