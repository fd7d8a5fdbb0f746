"""The gateway's cookies: names, attributes, reading them from a request, writing Set-Cookie,
and removing them from the Cookie header an upstream is sent.

- ``access`` and ``refresh`` hold the session's two tokens as they are (a few hundred bytes
  each; nothing is added per request). ``HttpOnly`` (no script reads them), ``SameSite=Lax`` (a
  link from another site still arrives logged in; a cross-site POST carries no session),
  ``Path=/``, no ``Domain`` (host-only). ``Max-Age`` is the token's own lifetime, so the browser
  drops an expired access token by itself.
- ``csrf`` is the login form's double-submit token: the same, with ``SameSite=Strict``.
- ``Secure`` and the ``__Host-`` prefix (which the browser accepts only from a secure origin,
  with ``Secure``, ``Path=/`` and no ``Domain``) on every request, except with
  ``browser.insecure_loopback`` on plain-HTTP requests between loopback addresses (the demo on
  http://127.0.0.1, where curl and some browsers would not send a Secure cookie back): there the
  names have no prefix and the cookies no ``Secure``. Each request reads only its own set.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from ..config import BrowserConfig
from ..networks import IpNetwork, address_in
from .tokens import TokenPair

__all__ = [
    "CSRF_MAX_AGE",
    "CookieSet",
    "PresentedCookies",
    "SessionCookies",
    "cookie_names",
    "strip_cookies",
]

# How long a login form stays usable (its CSRF cookie's lifetime).
CSRF_MAX_AGE = 3600
# Longer values are not ours (tokens are at most 8 KiB): read as absent.
_MAX_VALUE = 8192


@dataclass(frozen=True, slots=True)
class CookieSet:
    """The names and the Secure attribute of one of the two sets of cookies."""

    secure: bool
    access: str
    refresh: str
    csrf: str

    def session(self, pair: TokenPair) -> list[str]:
        """Set-Cookie values that store a token pair."""
        return [
            self._cookie(self.access, pair.access_token, pair.expires_in),
            self._cookie(self.refresh, pair.refresh_token, pair.refresh_expires_in),
        ]

    def cleared(self) -> list[str]:
        """Set-Cookie values that delete the session cookies."""
        return [self._cookie(self.access, "", 0), self._cookie(self.refresh, "", 0)]

    def csrf_token(self, token: str) -> str:
        return self._cookie(self.csrf, token, CSRF_MAX_AGE, same_site="Strict")

    def _cookie(self, name: str, value: str, max_age: int, *, same_site: str = "Lax") -> str:
        attributes = f"{name}={value}; Path=/; Max-Age={max(0, max_age)}; HttpOnly"
        attributes += f"; SameSite={same_site}"
        return attributes + "; Secure" if self.secure else attributes


@dataclass(frozen=True, slots=True)
class PresentedCookies:
    """The gateway's cookies a request carries (each None when absent), and which set it uses."""

    cookies: CookieSet
    access: str | None
    refresh: str | None
    csrf: str | None

    @property
    def has_session(self) -> bool:
        return self.access is not None or self.refresh is not None


def _cookie_sets(config: BrowserConfig) -> tuple[CookieSet, CookieSet]:
    name = config.cookie_name
    secure = CookieSet(
        True, f"__Host-{name}-access", f"__Host-{name}-refresh", f"__Host-{name}-csrf"
    )
    return secure, CookieSet(False, f"{name}-access", f"{name}-refresh", f"{name}-csrf")


def cookie_names(config: BrowserConfig) -> frozenset[str]:
    """Every name of both sets: what never reaches an upstream."""
    return frozenset(
        name
        for cookies in _cookie_sets(config)
        for name in (cookies.access, cookies.refresh, cookies.csrf)
    )


class SessionCookies:
    """Built once from config: which cookie set a request uses, and reading it."""

    def __init__(self, config: BrowserConfig, trusted_proxies: Sequence[IpNetwork]) -> None:
        self.secure, self.plain = _cookie_sets(config)
        self._insecure_loopback = config.insecure_loopback
        self._trusted_proxies = tuple(trusted_proxies)

    def cookie_set(self, request: web.BaseRequest) -> CookieSet:
        """The plain set only for plain-HTTP loopback requests, and only when configured."""
        if self._insecure_loopback and self._is_plain_loopback(request):
            return self.plain
        return self.secure

    def read(self, request: web.BaseRequest) -> PresentedCookies:
        cookies = self.cookie_set(request)
        wanted = (cookies.access, cookies.refresh, cookies.csrf)
        found: dict[str, str] = {}
        for header in request.headers.getall("Cookie", ()):
            for piece in header.split(";"):
                name, _, value = piece.partition("=")
                name, value = name.strip(), value.strip()
                # The first of duplicates counts (RFC 6265 sends the most specific first).
                if name in wanted and name not in found and 0 < len(value) <= _MAX_VALUE:
                    found[name] = value
        return PresentedCookies(
            cookies, found.get(cookies.access), found.get(cookies.refresh), found.get(cookies.csrf)
        )

    def _is_plain_loopback(self, request: web.BaseRequest) -> bool:
        if request.scheme != "http" or not _is_loopback(request.remote or ""):
            return False
        if address_in(request.remote, self._trusted_proxies):
            return False  # a proxy in front decides what the browser talks to
        host = request.host.lower()
        if host.startswith("["):
            host = host[1 : host.find("]")] if "]" in host else host
        else:
            host = host.rpartition(":")[0] if host.count(":") == 1 else host
        return host == "localhost" or _is_loopback(host)


def strip_cookies(value: bytes, names: frozenset[bytes]) -> bytes:
    """A Cookie header's value without the named cookies (the rest kept byte for byte)."""
    pieces = value.split(b";")
    kept = [piece for piece in pieces if piece.partition(b"=")[0].strip() not in names]
    if len(kept) == len(pieces):
        return value
    return b";".join(kept).strip()


@functools.lru_cache(maxsize=256)
def _is_loopback(address: str) -> bool:
    # Asked twice per cookie request (peer and Host); parsing an address costs ~3 us, a
    # cached answer 50 ns. The bound keeps Host values a client makes up from growing it.
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
