"""The client's errors: one base class, two outcomes a caller handles differently."""

from __future__ import annotations

__all__ = ["GatewayClientError", "LoginRequired", "RefreshFailed"]


class GatewayClientError(Exception):
    """Base class of the client's errors."""


class LoginRequired(GatewayClientError):
    """The session is over (or there never was one): log in again."""


class RefreshFailed(GatewayClientError):
    """The refresh failed for a reason that may pass (network, 5xx); the tokens are kept."""
