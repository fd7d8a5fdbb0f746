"""JWT issuing and verification with one pinned algorithm; the only maker of `Identity`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import InitVar, dataclass
from typing import Any, Final

import jwt

from .config import TokenConfig
from .errors import Unauthorized

__all__ = ["MAX_TOKEN_BYTES", "Identity", "RefreshGrant", "TokenPair", "TokenService"]

MAX_TOKEN_BYTES: Final = 8192
ACCESS: Final = "access"
REFRESH: Final = "refresh"
# Claim naming the token's use, so a refresh token never passes as an access token (or back).
TOKEN_USE: Final = "token_use"  # noqa: S105 - a claim name, not a secret
_REQUIRED = ("exp", "iat", "sub", "jti", "iss", "aud", TOKEN_USE)
_MINT: Final = object()


@dataclass(frozen=True, slots=True)
class Identity:
    """A user identity proven by a verified access token. Only TokenService can create one."""

    user_id: str
    username: str
    token_id: str
    expires_at: float
    mint: InitVar[object] = None

    def __post_init__(self, mint: object) -> None:
        if mint is not _MINT:
            raise TypeError("an Identity is created only by TokenService.verify_access")


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    """What a verified refresh token allows: a new pair for this user."""

    user_id: str
    token_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int

    def as_json(self) -> dict[str, object]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_expires_in": self.refresh_expires_in,
        }


class TokenService:
    """Signs and verifies access and refresh tokens for one key and one algorithm."""

    def __init__(self, config: TokenConfig, *, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._key = config.key
        self._clock = clock
        self._headers = {"kid": config.key.kid} if config.key.kid else None

    @property
    def jwks(self) -> dict[str, Any] | None:
        """The public keys to publish, or None for a shared secret."""
        return self._key.jwks

    def issue_pair(self, *, user_id: int, username: str) -> TokenPair:
        now = int(self._clock())
        access_ttl, refresh_ttl = int(self._config.access_ttl), int(self._config.refresh_ttl)
        access = self._sign(
            {"sub": str(user_id), "username": username, TOKEN_USE: ACCESS}, now, access_ttl
        )
        refresh = self._sign({"sub": str(user_id), TOKEN_USE: REFRESH}, now, refresh_ttl)
        return TokenPair(access, refresh, access_ttl, refresh_ttl)

    def verify_access(self, token: str) -> Identity:
        """Verify an access token or raise Unauthorized (invalid_token)."""
        claims = self._verify(token, ACCESS, "access")
        username = claims.get("username")
        if not isinstance(username, str):
            raise Unauthorized("Access token has no username", token_presented=True)
        return Identity(
            user_id=claims["sub"],
            username=username,
            token_id=claims["jti"],
            expires_at=float(claims["exp"]),
            mint=_MINT,
        )

    def verify_refresh(self, token: str) -> RefreshGrant:
        """Verify a refresh token or raise Unauthorized (invalid_token)."""
        claims = self._verify(token, REFRESH, "refresh")
        return RefreshGrant(claims["sub"], claims["jti"], float(claims["exp"]))

    def _sign(self, claims: dict[str, Any], now: int, ttl: int) -> str:
        payload = {
            **claims,
            "iss": self._config.issuer,
            "aud": self._config.audience,
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(
            payload, self._key.signing_key, algorithm=self._key.algorithm, headers=self._headers
        )

    def _verify(self, token: str, expected_use: str, label: str) -> Mapping[str, Any]:
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthorized(f"{label.capitalize()} token is too long", token_presented=True)
        try:
            # exp/iat are checked below against the injectable clock, not PyJWT's.
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key.verifying_key,
                algorithms=[self._key.algorithm],
                audience=self._config.audience,
                issuer=self._config.issuer,
                options={
                    "require": list(_REQUIRED),
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError:
            raise Unauthorized(f"Invalid {label} token", token_presented=True) from None
        if claims[TOKEN_USE] != expected_use:
            raise Unauthorized(
                f"Token is not an {label} token"
                if label == "access"
                else f"Token is not a {label} token",
                token_presented=True,
            )
        exp, iat, sub, jti = claims["exp"], claims["iat"], claims["sub"], claims["jti"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (exp, iat)):
            raise Unauthorized(f"Invalid {label} token", token_presented=True)
        if not isinstance(sub, str) or not sub.isdigit() or not isinstance(jti, str):
            raise Unauthorized(f"Invalid {label} token", token_presented=True)
        now, leeway = self._clock(), self._config.leeway
        if now >= exp + leeway:
            raise Unauthorized(f"{label.capitalize()} token expired", token_presented=True)
        if iat > now + leeway:
            raise Unauthorized(
                f"{label.capitalize()} token issued in the future", token_presented=True
            )
        return claims
