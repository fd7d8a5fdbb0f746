"""Who a proxied request is, under its route's policy: the one place a route's `auth` and
`roles` are applied. Public routes never look at the token."""

from __future__ import annotations

from collections.abc import Callable

from ..config import AuthPolicy, RouteConfig
from ..errors import Forbidden, Unauthorized
from ..telemetry.metrics import GatewayMetrics
from .bearer import authenticate
from .revocation import RevocationView
from .tokens import Identity, TokenService

__all__ = ["Authenticator"]


class Authenticator:
    """Applies a route's policy to the token a request carries."""

    def __init__(
        self, tokens: TokenService, revocations: RevocationView, metrics: GatewayMetrics
    ) -> None:
        self._tokens = tokens
        self._revocations = revocations
        self._rejections = metrics.token_rejections

    def identify(self, route: RouteConfig, read_token: Callable[[], str | None]) -> Identity | None:
        """The identity the route needs (None for public routes and anonymous optional ones),
        or 401 for a missing or bad token where one is required."""
        if route.auth is AuthPolicy.PUBLIC:
            return None
        try:
            token = read_token()
            if token is None and route.auth is AuthPolicy.OPTIONAL:
                return None
            identity = authenticate(token, self._tokens, self._revocations)
        except Unauthorized as exc:
            self._rejections.labels(exc.reason).inc()
            if route.auth is AuthPolicy.OPTIONAL:
                return None  # optional: an invalid token means anonymous, not an error
            raise
        return identity

    @staticmethod
    def authorize(route: RouteConfig, identity: Identity | None) -> None:
        """403 unless the identity has one of the roles the route asks for."""
        if route.roles and (identity is None or route.roles.isdisjoint(identity.roles)):
            raise Forbidden(f"Requires one of the roles: {', '.join(sorted(route.roles))}")
