"""The signed identity assertion an upstream can verify (`X-Gateway-Assertion`): a short-lived
JWT signed with the gateway's asymmetric key and checked against /.well-known/jwks.json.

Plain identity headers are only as trustworthy as the network between gateway and upstream;
this one cannot be forged without the private key, and its `aud` (the upstream's name) keeps an
assertion meant for one upstream from being replayed to another. Claims: iss, aud, sub,
username, roles, sid, iat, exp (at most `assertion.ttl`, never past the access token's own
expiry) and jti. Signing costs tens of microseconds (ES256/EdDSA) to milliseconds (RS256), so
an assertion is kept per access token and upstream and reused for most of its life: a request
pays a dictionary lookup.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

import jwt

from ..config import GatewayConfig, RouteConfig
from .tokens import Identity

__all__ = ["AssertionSigner", "assertion_signer"]

log = logging.getLogger(__name__)
CACHE_SIZE: Final = 10_000
# A cached assertion is reused while this much of its lifetime is left to run.
_REUSE_FRACTION: Final = 0.8


class AssertionSigner:
    """Built once by create_app when the key can sign assertions; used by the header policy."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Callable[[], float] = time.time,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        key = config.tokens.key
        self.header = config.assertion.header
        self._enabled = config.assertion.enabled
        self._issuer = config.tokens.issuer
        self._ttl = int(config.assertion.ttl)
        self._reuse = config.assertion.ttl * _REUSE_FRACTION
        self._signing_key = key.signing_key
        self._algorithm = key.algorithm
        self._headers = {"kid": key.kid, "typ": "JWT"}
        self._clock = clock
        # (access token id, upstream) -> (assertion, reuse it until)
        self._cache: dict[tuple[str, str], tuple[str, float]] = {}
        self._cache_size = cache_size

    def wanted(self, route: RouteConfig) -> bool:
        """Whether the route's upstream gets the assertion (its own setting, else the global)."""
        return self._enabled if route.assertion is None else route.assertion

    def assertion(self, identity: Identity, upstream: str) -> str:
        """The assertion of `identity` for `upstream`, from the cache while it is fresh."""
        key = (identity.token_id, upstream)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and now < cached[1]:
            return cached[0]
        issued = int(now)
        expires = min(issued + self._ttl, int(identity.expires_at))
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": upstream,
            "sub": identity.user_id,
            "username": identity.username,
            "roles": list(identity.roles),
            "sid": identity.session_id,
            "iat": issued,
            "exp": expires,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._signing_key, self._algorithm, headers=self._headers)
        if cached is None and len(self._cache) >= self._cache_size:
            del self._cache[next(iter(self._cache))]  # the oldest entry goes first
        self._cache[key] = (token, min(issued + self._reuse, expires))
        return token


def assertion_signer(
    config: GatewayConfig, *, clock: Callable[[], float] = time.time
) -> AssertionSigner | None:
    """The signer, or None when no route asks for an assertion or the key cannot sign one (a
    shared HS256 secret: anyone who could verify it could also forge it); says which at start."""
    asked = config.assertion.enabled or any(route.assertion for route in config.routes)
    if not config.tokens.key.asymmetric:
        if asked:
            log.warning(
                "identity assertion: asked for, but tokens are signed with a shared secret "
                "(HS256), which an upstream could use to forge one; NO %s is sent. Set "
                "tokens.private_key_file (RS256, ES256 or EdDSA) to send it",
                config.assertion.header,
            )
        return None
    if asked:
        log.info(
            "identity assertion: %s (%s, %gs) for %s",
            config.assertion.header,
            config.tokens.key.algorithm,
            config.assertion.ttl,
            "every route" if config.assertion.enabled else "the routes that ask for it",
        )
    return AssertionSigner(config, clock=clock)
