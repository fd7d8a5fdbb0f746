"""How an upstream checks the gateway's identity assertion, with PyJWT and the JWKS URL.

    verifier = AssertionVerifier("http://gateway:8080/.well-known/jwks.json",
                                 audience="demo", issuer="auth-gateway")
    claims = await verifier.verify(request.headers["X-Gateway-Assertion"])  # or jwt.PyJWTError

The keys are fetched once and again when a token names a key not seen yet (a rotation), at
most every `refetch_after` seconds; a key that left the JWKS stops verifying at the next fetch.
The algorithm is pinned to the one the key says; `aud` must be this upstream's name in the
gateway's config, `iss` the gateway's issuer; `exp` is checked (PyJWT's default).
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import jwt

__all__ = ["AssertionVerifier"]


class AssertionVerifier:
    def __init__(
        self, jwks_url: str, *, audience: str, issuer: str, refetch_after: float = 30.0
    ) -> None:
        self._url = jwks_url
        self._audience = audience
        self._issuer = issuer
        self._refetch_after = refetch_after
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")

    async def verify(self, token: str) -> dict[str, Any]:
        """The assertion's claims, or jwt.PyJWTError saying what is wrong."""
        kid = jwt.get_unverified_header(token).get("kid")
        if not isinstance(kid, str):
            raise jwt.InvalidTokenError("the assertion names no key (kid)")
        if kid not in self._keys and time.monotonic() - self._fetched_at > self._refetch_after:
            await self.refetch()
        key = self._keys.get(kid)
        if key is None:
            raise jwt.InvalidKeyError(f"key {kid!r} is not in the gateway's JWKS")
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[key.algorithm_name],
            audience=self._audience,
            issuer=self._issuer,
            options={"require": ["iss", "aud", "sub", "sid", "iat", "exp", "jti"]},
        )
        return claims

    async def refetch(self) -> None:
        """Read the JWKS again (keys that left it stop verifying)."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(self._url, timeout=aiohttp.ClientTimeout(total=5)) as resp,
        ):
            resp.raise_for_status()
            document = await resp.json()
        self._keys = {
            jwk["kid"]: jwt.PyJWK(jwk) for jwk in document.get("keys", []) if "kid" in jwk
        }
        self._fetched_at = time.monotonic()
