"""Request path normalization: the route decision is made on exactly the path that is forwarded.

Rules (README, "Path normalization"):
- percent-escapes are decoded once and the path is re-encoded canonically;
- an encoded ``/``, ``\\`` or NUL (``%2F``, ``%5C``, ``%00``), a raw backslash, ``;`` parameters,
  control characters, a fragment (``#``), invalid escapes or non-UTF-8 bytes are rejected with 400;
- repeated slashes collapse to one, ``.`` and ``..`` segments are resolved (also when encoded);
  climbing above the root is rejected;
- case is preserved: ``/BBB`` is a different path from ``/bbb``.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote_to_bytes

from ..errors import BadRequest

__all__ = ["MAX_PATH_LENGTH", "normalize_path"]

MAX_PATH_LENGTH = 4096
# Already canonical: segments of plain characters, none empty, none starting with a dot.
_CANONICAL = re.compile(r"(?:/[A-Za-z0-9\-_~][A-Za-z0-9\-_~.]{0,255})+/?|/")
_FORBIDDEN_ESCAPES = re.compile(r"%(?:2f|5c|00)", re.IGNORECASE)
_VALID_ESCAPES = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
_DECODED_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Characters kept literal when re-encoding a segment: RFC 3986 pchar minus ';' which we reject.
_SAFE = "-._~!$&'()*+,=:@"


def normalize_path(raw_path: str) -> str:
    """Return the canonical, encoded form of a raw request path, or raise BadRequest."""
    if len(raw_path) <= MAX_PATH_LENGTH and _CANONICAL.fullmatch(raw_path):
        return raw_path  # the common case: nothing to decode, resolve or refuse
    if len(raw_path) > MAX_PATH_LENGTH:
        raise BadRequest(f"Request path is longer than {MAX_PATH_LENGTH} characters")
    if not raw_path.startswith("/"):
        raise BadRequest("Request path must start with '/'")
    if "#" in raw_path:
        raise BadRequest("Request target must not contain a fragment ('#')")
    if "\\" in raw_path:
        raise BadRequest("Request path must not contain a backslash")
    if ";" in raw_path:
        raise BadRequest("Request path must not contain ';' parameters")
    if _CONTROL.search(raw_path):
        raise BadRequest("Request path must not contain spaces or control characters")
    if _VALID_ESCAPES.search(raw_path):
        raise BadRequest("Request path has an invalid percent-escape")
    if _FORBIDDEN_ESCAPES.search(raw_path):
        raise BadRequest("Request path must not contain an encoded '/', '\\' or NUL")
    try:
        decoded = unquote_to_bytes(raw_path).decode("utf-8")
    # Encode: a byte that was not UTF-8 to begin with (a surrogate escape, as aiohttp decodes
    # header values: forward auth's X-Original-URI).
    except (UnicodeDecodeError, UnicodeEncodeError):
        raise BadRequest("Request path is not valid UTF-8 after percent-decoding") from None
    if _DECODED_CONTROL.search(decoded):
        raise BadRequest("Request path must not contain control characters")
    if "\\" in decoded or ";" in decoded or "#" in decoded or "?" in decoded:
        raise BadRequest("Request path must not contain an encoded '\\', ';', '#' or '?'")

    segments: list[str] = []
    parts = decoded.split("/")[1:]
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not segments:
                raise BadRequest("Request path climbs above the root with '..'")
            segments.pop()
            continue
        segments.append(part)
    trailing_slash = bool(parts) and parts[-1] in ("", ".", "..") and bool(segments)
    encoded = "/" + "/".join(quote(s, safe=_SAFE) for s in segments)
    return encoded + "/" if trailing_slash else encoded
