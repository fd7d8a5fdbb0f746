"""Every error that carries an HTTP status, in one place; one middleware turns them into JSON.

    GatewayError                      the status, a message safe to show, extra headers
    ├── BadRequest              400   a malformed request, body or path
    ├── Unauthorized            401   no token, a bad one, wrong credentials (RFC 6750 challenge)
    ├── Forbidden               403   authenticated but not allowed; clients must not refresh
    │   └── OriginRefused       403   a CORS preflight from an origin, method or header not allowed
    ├── NotFound                404   no route, or a gateway path spelled non-canonically
    ├── MethodNotAllowed        405   the route does not take the method (with Allow)
    ├── RequestTimeout          408   a request body that stalled (closes the connection)
    ├── PayloadTooLarge         413   a body over the route's limit (closes the connection)
    ├── UnsupportedMediaType    415   a JSON body not sent as application/json, or encoded
    ├── TooManyRequests         429   failed-login limits, route rate limits (with Retry-After)
    ├── HeaderBlockTooLarge     431   too many or too large request headers
    ├── VersionNotSupported     505   an HTTP/1 request line naming another version (HTTP/2.0)
    ├── ServiceUnavailable      503
    │   ├── StorageUnavailable  503   the database is unreachable or failed (with Retry-After)
    │   └── LoginsBusy          503   the password-hashing queue is full (with Retry-After)
    └── UpstreamFailure               an upstream gave no usable answer; `kind` says how
        ├── BadGateway          502   refused, TLS failed, broken off, malformed, handshake refused
        ├── UpstreamUnavailable 503   no target can take it now: all ejected or unhealthy, or
        │                             the chosen target's circuit breaker is full (Retry-After)
        └── GatewayTimeout      504   no answer within the upstream's timeout
    ConfigError                       not HTTP: every problem in a configuration file

Errors from libraries are translated where they are caught (the database drivers raise
StorageUnavailable, `proxy.failures.upstream_errors` translates the upstream client's), so no
other exception type carries a status.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from http import HTTPStatus

__all__ = [
    "BadGateway",
    "BadRequest",
    "ConfigError",
    "Forbidden",
    "GatewayError",
    "GatewayTimeout",
    "HeaderBlockTooLarge",
    "LoginsBusy",
    "MethodNotAllowed",
    "NotFound",
    "OriginRefused",
    "PayloadTooLarge",
    "RequestTimeout",
    "StorageUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "UpstreamFailure",
    "UpstreamUnavailable",
    "VersionNotSupported",
    "rendered_error",
    "shown",
]


def error_body(status: int, message: str) -> dict[str, object]:
    """The error shape existing (NestJS-era) clients parse."""
    return {"statusCode": status, "message": message, "error": HTTPStatus(status).phrase}


@functools.lru_cache(maxsize=1024)
def rendered_error(status: int, message: str) -> bytes:
    """`error_body` as JSON bytes, rendered once per distinct error: a flood of bad tokens
    costs no JSON encoding (the bound keeps messages that name a path from growing it)."""
    return json.dumps(error_body(status, message)).encode()


_SAFE_TO_SHOW = re.compile(r"[A-Za-z0-9 ._~/:@!$&'()*+,;=%-]*")
_SHOWN_LENGTH = 120


def shown(value: str) -> str:
    """Request input as an error message may quote it: anything outside plain URL characters
    (angle brackets, quotes, backslashes, control and non-ASCII characters) escaped as \\xNN or
    \\uNNNN, and at most 120 characters, so a message never carries markup or forged text."""
    clipped = value[:_SHOWN_LENGTH]
    if not _SAFE_TO_SHOW.fullmatch(clipped):
        clipped = "".join(c if _SAFE_TO_SHOW.fullmatch(c) else _escaped(c) for c in clipped)
    return clipped + ("..." if len(value) > _SHOWN_LENGTH else "")


def _escaped(char: str) -> str:
    code = ord(char)
    return (
        f"\\x{code:02x}"
        if code < 0x80
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )


class GatewayError(Exception):
    """An error with a status, a message safe to show the client, and extra headers."""

    status: int = 500
    # True when the rest of the request cannot be trusted to be read (an unread or stalled
    # body): the connection is closed after the answer.
    closes_connection: bool = False

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})


class BadRequest(GatewayError):
    status = 400


class Unauthorized(GatewayError):
    """401 with the RFC 6750 challenge; `invalid_token` when a token was presented and failed."""

    status = 401

    def __init__(self, message: str, *, token_presented: bool, reason: str = "invalid") -> None:
        # A short label for metrics (gateway_token_rejections, gateway_refreshes).
        self.reason = reason
        challenge = 'Bearer realm="gateway"'
        if token_presented:
            description = message.replace("\\", "").replace('"', "'")
            challenge += f', error="invalid_token", error_description="{description}"'
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class Forbidden(GatewayError):
    """Authenticated, but not allowed: clients must not try to refresh on this."""

    status = 403


class OriginRefused(Forbidden):
    """A CORS preflight the configured policy does not allow."""


class NotFound(GatewayError):
    status = 404


class MethodNotAllowed(GatewayError):
    status = 405

    def __init__(self, message: str, *, allowed: frozenset[str]) -> None:
        super().__init__(message, headers={"Allow": ", ".join(sorted(allowed))})


class RequestTimeout(GatewayError):
    status = 408
    closes_connection = True


class PayloadTooLarge(GatewayError):
    status = 413
    closes_connection = True


class UnsupportedMediaType(GatewayError):
    status = 415


class TooManyRequests(GatewayError):
    status = 429

    def __init__(
        self,
        retry_after: float,
        *,
        what: str = "failed logins",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            f"Too many {what}; try again in {seconds} seconds",
            headers={"Retry-After": str(seconds), **(headers or {})},
        )


class HeaderBlockTooLarge(GatewayError):
    status = 431


class VersionNotSupported(GatewayError):
    """Answered as HTTP/1.1 and the connection closed: the client speaks something else."""

    status = 505
    closes_connection = True


class ServiceUnavailable(GatewayError):
    status = 503


class StorageUnavailable(ServiceUnavailable):
    """The database could not be reached or failed; the request may be retried."""

    def __init__(self, message: str = "Database unavailable, try again shortly") -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class LoginsBusy(ServiceUnavailable):
    """More logins than the hashing queue holds: answered at once rather than after a wait."""

    def __init__(self, message: str = "Too many logins at once, try again shortly") -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class UpstreamFailure(GatewayError):
    """An upstream gave no usable answer. `kind` names how (connect, tls, timeout,
    protocol, handshake, broken_body): the label of gateway_upstream_errors."""

    def __init__(self, upstream: str, kind: str, what: str) -> None:
        super().__init__(f"Upstream '{upstream}' {what}")
        self.upstream = upstream
        self.kind = kind


class BadGateway(UpstreamFailure):
    status = 502


class GatewayTimeout(UpstreamFailure):
    status = 504


class UpstreamUnavailable(UpstreamFailure):
    """No target of the upstream can take the request now; `retry_after`: when one may."""

    status = 503

    def __init__(self, upstream: str, kind: str, what: str, *, retry_after: float) -> None:
        super().__init__(upstream, kind, what)
        self.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))


class ConfigError(Exception):
    """Every problem found in a configuration file, each prefixed with where it is."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
