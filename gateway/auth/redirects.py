"""Where a login sends the browser: never an open redirect.

A return URL is kept only when it is a path on this site (`/bbb?x=1`) or an absolute http(s) URL
whose origin is the request's own or a trusted one; everything else becomes `/`. Refused among
others: other hosts, `//host` and `/\\host` (browsers read both as another host), `\\` anywhere,
`javascript:` and every other scheme, `http:host` and `http:/host`, user info (`https://a@b`),
whitespace and control characters (browsers drop tabs and newlines, so `/\\t/host` is `//host`),
non-ASCII, anything over 2048 characters, and encoded spellings that decode to `//` or `/\\`.
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import quote, unquote, urlsplit

from ..config.endpoints import OWN_ENDPOINTS
from .origins import normalize_origin

__all__ = ["LOGIN_PATH", "login_location", "safe_return_url"]

LOGIN_PATH = next(endpoint.path for endpoint in OWN_ENDPOINTS if endpoint.name == "login_page")
MAX_RETURN_URL = 2048
_FALLBACK = "/"
# How many layers of percent-encoding are looked through for a hidden `//`.
_DECODE_ROUNDS = 3


def safe_return_url(value: str | None, *, allowed_origins: Collection[str]) -> str:
    """`value` when it stays on this site or a trusted origin, `/` otherwise."""
    if not value or len(value) > MAX_RETURN_URL:
        return _FALLBACK
    # Printable ASCII only: no spaces, tabs, newlines, DEL or other control characters.
    if not all(0x21 <= ord(char) <= 0x7E for char in value) or "\\" in value:
        return _FALLBACK
    if value.startswith("/"):
        return value if _is_local_path(value) else _FALLBACK
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return _FALLBACK
    origin = normalize_origin(f"{parts.scheme}://{parts.netloc}")
    if origin is None or origin not in allowed_origins:
        return _FALLBACK
    rest = value[len(parts.scheme) + 3 + len(parts.netloc) :]
    if rest and not (rest[0] in "?#" or _is_local_path(rest)):
        return _FALLBACK
    return value


def login_location(return_to: str) -> str:
    """The login page's URL, carrying where the browser was going."""
    return f"{LOGIN_PATH}?rd={quote(return_to, safe='')}"


def _is_local_path(path: str) -> bool:
    """A path that starts one segment on this host, under every decoding a server might do."""
    for _ in range(_DECODE_ROUNDS + 1):
        if not path.startswith("/") or path.startswith(("//", "/\\")):
            return False
        if any(ord(char) < 0x20 or ord(char) == 0x7F for char in path):
            return False
        decoded = unquote(path)
        if decoded == path:
            return True
        path = decoded
    return True
