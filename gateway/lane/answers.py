"""Answers written as bytes, without a response object: the same status lines, headers and
bodies the app's path writes through aiohttp's, for the lane's requests."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Mapping
from http import HTTPStatus

from aiohttp.helpers import rfc822_formatted_time

from ..errors import GatewayError, rendered_error

__all__ = ["BODILESS_STATUSES", "error_answer", "no_body", "permit_answer", "relayed_head"]

_JSON = b"Content-Type: application/json; charset=utf-8\r\n"
_PHRASES = {status.value: status.phrase.encode() for status in HTTPStatus}
# Statuses whose answers never carry a body (RFC 9110 6.4.1).
BODILESS_STATUSES = frozenset({204, 304, *range(100, 200)})


def relayed_head(
    status: int,
    reason: str | None,
    headers: Iterable[tuple[bytes, bytes]],
    dropped: frozenset[bytes],
    gateway_lines: bytes,
    *,
    closing: bool,
) -> bytes:
    """A status line and header block: an upstream's headers as they came but those named in
    `dropped` (lower case), a Date unless they have one, the gateway's own lines
    (gateway.edge), `Connection: close` when the connection ends after it."""
    phrase = reason.encode("utf-8", "surrogateescape") if reason else _PHRASES.get(status, b"")
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, phrase)]
    dated = False
    for name, value in headers:
        lower = name.lower()
        if lower in dropped:
            continue
        if lower == b"date":
            dated = True
        parts += (name, b": ", value, b"\r\n")
    if not dated:
        parts.append(_DATE.line())
    parts.append(gateway_lines)
    if closing:
        parts.append(_CLOSE)
    parts.append(b"\r\n")
    return b"".join(parts)


def error_answer(error: GatewayError, gateway_lines: bytes, *, method: str, closing: bool) -> bytes:
    """A refusal in the JSON shape clients parse, with its extra headers (to HEAD: its length,
    not its body, as aiohttp answers HEAD)."""
    start, body = _refusal(error.status, error.message, tuple(error.headers.items()))
    answer = b"%b%b%b%b\r\n" % (start, _DATE.line(), gateway_lines, _CLOSE if closing else b"")
    return answer if method == "HEAD" else answer + body


@functools.lru_cache(maxsize=1024)
def _refusal(
    status: int, message: str, headers: tuple[tuple[str, str], ...]
) -> tuple[bytes, bytes]:
    """A refusal's head up to its Date, and its body: rendered once per distinct refusal, so a
    flood of bad tokens costs no formatting (bounded as `rendered_error` is)."""
    body = rendered_error(status, message)
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, _PHRASES.get(status, b""))]
    lines += (f"{name}: {value}\r\n".encode("utf-8", "surrogateescape") for name, value in headers)
    lines.append(b"%bContent-Length: %d\r\n" % (_JSON, len(body)))
    return b"".join(lines), body


class _DateLine:
    """The Date header line, formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def line(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._line = f"Date: {rfc822_formatted_time()}\r\n".encode()
        return self._line


_DATE = _DateLine()
_CLOSE = b"Connection: close\r\n"


def permit_answer(headers: Mapping[str, str], gateway_lines: bytes, *, closing: bool) -> bytes:
    """A bodiless 200 carrying `headers` (forward auth's decision)."""
    lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    return b"HTTP/1.1 200 OK\r\n%bContent-Length: 0\r\n%b%b%b\r\n" % (
        lines.encode("utf-8", "surrogateescape"),
        _DATE.line(),
        gateway_lines,
        _CLOSE if closing else b"",
    )


def no_body(status: int, method: str) -> bool:
    """Whether an answer carries no body: to HEAD, and 1xx, 204 and 304."""
    return status in BODILESS_STATUSES or method == "HEAD"
