"""Answers written as bytes, without a response object: the same status lines, headers and
bodies the app's path writes through aiohttp's, for the lane's requests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus

from aiohttp.helpers import rfc822_formatted_time

from ..errors import GatewayError, rendered_error

__all__ = ["BODILESS_STATUSES", "error_answer", "head", "no_body", "permit_answer"]

_JSON = b"Content-Type: application/json; charset=utf-8\r\n"
_PHRASES = {status.value: status.phrase.encode() for status in HTTPStatus}
# Statuses whose answers never carry a body (RFC 9110 6.4.1).
BODILESS_STATUSES = frozenset({204, 304, *range(100, 200)})


def head(
    status: int,
    reason: str | None,
    headers: Iterable[tuple[str, str]],
    gateway_lines: bytes,
    *,
    closing: bool,
) -> bytes:
    """A status line and header block: `headers`, a Date unless they have one, the gateway's
    own lines (gateway.edge), `Connection: close` when the connection ends after it."""
    phrase = reason.encode("utf-8", "surrogateescape") if reason else _PHRASES.get(status, b"")
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, phrase)]
    dated = False
    for name, value in headers:
        if not dated and name.lower() == "date":
            dated = True
        parts.append(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape"))
    if not dated:
        parts.append(f"Date: {rfc822_formatted_time()}\r\n".encode())
    parts.append(gateway_lines)
    if closing:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def error_answer(error: GatewayError, gateway_lines: bytes, *, method: str, closing: bool) -> bytes:
    """A refusal in the JSON shape clients parse, with its extra headers (to HEAD: its length,
    not its body, as aiohttp answers HEAD)."""
    body = rendered_error(error.status, error.message)
    lines = b"%bContent-Length: %d\r\n%b" % (_JSON, len(body), gateway_lines)
    answer = head(error.status, None, error.headers.items(), lines, closing=closing)
    return answer if method == "HEAD" else answer + body


def permit_answer(headers: Mapping[str, str], gateway_lines: bytes, *, closing: bool) -> bytes:
    """A bodiless 200 carrying `headers` (forward auth's decision)."""
    return head(
        200, None, headers.items(), b"Content-Length: 0\r\n" + gateway_lines, closing=closing
    )


def no_body(status: int, method: str) -> bool:
    """Whether an answer carries no body: to HEAD, and 1xx, 204 and 304."""
    return status in BODILESS_STATUSES or method == "HEAD"
