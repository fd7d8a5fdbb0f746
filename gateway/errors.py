"""Domain errors that carry their HTTP status; one middleware turns them into JSON."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

__all__ = [
    "BadGateway",
    "BadRequest",
    "ConfigError",
    "Forbidden",
    "GatewayError",
    "GatewayTimeout",
    "MethodNotAllowed",
    "NotFound",
    "ServiceUnavailable",
    "Unauthorized",
    "UnsupportedMediaType",
    "error_body",
]


def error_body(status: int, message: str) -> dict[str, object]:
    """The error shape existing (NestJS-era) clients parse."""
    return {"statusCode": status, "message": message, "error": HTTPStatus(status).phrase}


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


class NotFound(GatewayError):
    status = 404


class MethodNotAllowed(GatewayError):
    status = 405

    def __init__(self, message: str, *, allowed: frozenset[str]) -> None:
        super().__init__(message, headers={"Allow": ", ".join(sorted(allowed))})


class UnsupportedMediaType(GatewayError):
    status = 415


class BadGateway(GatewayError):
    status = 502


class ServiceUnavailable(GatewayError):
    status = 503


class GatewayTimeout(GatewayError):
    status = 504


class ConfigError(Exception):
    """Every problem found in a configuration file, each prefixed with where it is."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
