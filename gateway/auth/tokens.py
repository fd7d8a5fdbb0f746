"""JWT issuing and verification with one pinned algorithm; the only maker of `Identity`."""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import InitVar, dataclass
from typing import Any, Final

import jwt

from ..config import TokenConfig
from ..config.names import is_valid_role
from ..errors import Unauthorized

__all__ = ["ACCESS", "REFRESH", "Identity", "TokenPair", "TokenService"]

MAX_TOKEN_BYTES: Final = 8192
VERIFIED_CACHE_SIZE: Final = 10_000
ACCESS: Final = "access"
REFRESH: Final = "refresh"
# Claim naming the token's use, so a refresh token never passes as an access token (or back).
TOKEN_USE: Final = "token_use"  # noqa: S105 - a claim name, not a secret
_REQUIRED = ("exp", "iat", "sub", "sid", "jti", "iss", "aud", TOKEN_USE)
_HEX_ID = re.compile(r"[0-9a-f]{32}")
_USER_ID = re.compile(r"[0-9]{1,19}")
_MINT: Final = object()


@dataclass(frozen=True, slots=True)
class Identity:
    """A user identity proven by a verified access token. Only TokenService can create one."""

    user_id: str
    username: str
    session_id: str
    token_id: str
    expires_at: float
    roles: tuple[str, ...] = ()
    mint: InitVar[object] = None

    def __post_init__(self, mint: object) -> None:
        if mint is not _MINT:
            raise TypeError("an Identity is created only by TokenService.verify_access")


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    """A verified refresh token: which session's head it claims to be."""

    user_id: int
    session_id: str
    token_id: str


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

    def __init__(
        self,
        config: TokenConfig,
        *,
        clock: Callable[[], float] = time.time,
        cache_size: int = VERIFIED_CACHE_SIZE,
    ) -> None:
        self._config = config
        self._key = config.key
        self._clock = clock
        self._headers = {"kid": config.key.kid} if config.key.kid else None
        # Access tokens whose signature and claims were verified, by their exact text: the
        # signature is checked once per token, not per request. Expiry is still checked on
        # every use (and revocation by the caller). Oldest entries go first when full.
        self._verified: dict[str, Identity] = {}
        self._cache_size = cache_size

    @property
    def jwks(self) -> dict[str, Any] | None:
        """The public keys to publish, or None for a shared secret."""
        return self._key.jwks

    def access_token(
        self,
        *,
        user_id: int,
        username: str,
        session_id: str,
        not_after: float,
        roles: tuple[str, ...] = (),
    ) -> tuple[str, int]:
        """A new access token (never outliving its session) and its lifetime in seconds."""
        now = int(self._clock())
        expires = min(now + int(self._config.access_ttl), int(not_after))
        claims: dict[str, Any] = {
            "sub": str(user_id),
            "username": username,
            "sid": session_id,
            "roles": list(roles),
            TOKEN_USE: ACCESS,
        }
        return self._sign(claims, jti=uuid.uuid4().hex, issued_at=now, expires_at=expires), (
            expires - now
        )

    def refresh_token(
        self, *, user_id: int, session_id: str, jti: str, issued_at: int, expires_at: int
    ) -> str:
        """The refresh token for a session head. The same arguments give an equivalent token,
        which is how the grace window hands back the current head."""
        claims = {"sub": str(user_id), "sid": session_id, TOKEN_USE: REFRESH}
        return self._sign(claims, jti=jti, issued_at=issued_at, expires_at=expires_at)

    def verify_access(self, token: str) -> Identity:
        """Verify an access token or raise Unauthorized (invalid_token)."""
        cached = self._verified.get(token)
        if cached is not None:
            if self._clock() < cached.expires_at + self._config.leeway:
                return cached
            del self._verified[token]  # expired: the full check below says so
        identity = self._verify_access(token)
        if len(self._verified) >= self._cache_size:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = identity
        return identity

    def _verify_access(self, token: str) -> Identity:
        claims = self._verify(token, ACCESS, "access")
        username = claims.get("username")
        if not isinstance(username, str):
            raise Unauthorized("Access token has no username", token_presented=True)
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise Unauthorized("Invalid access token", token_presented=True)
        # These become header values upstream: a value no header can carry (CR, LF, NUL...) or
        # a role that would split X-User-Roles is an invalid token, never a 500 later.
        if _CONTROL.search(username) or not all(is_valid_role(r) for r in roles):
            raise Unauthorized("Invalid access token", token_presented=True)
        return Identity(
            user_id=claims["sub"],
            username=username,
            session_id=claims["sid"],
            token_id=claims["jti"],
            expires_at=float(claims["exp"]),
            roles=tuple(roles),
            mint=_MINT,
        )

    def verify_refresh(self, token: str) -> RefreshGrant:
        """Verify a refresh token or raise Unauthorized (invalid_token)."""
        claims = self._verify(token, REFRESH, "refresh")
        return RefreshGrant(int(claims["sub"]), claims["sid"], claims["jti"])

    def _sign(self, claims: dict[str, Any], *, jti: str, issued_at: int, expires_at: int) -> str:
        payload = {
            **claims,
            "iss": self._config.issuer,
            "aud": self._config.audience,
            "iat": issued_at,
            "exp": expires_at,
            "jti": jti,
        }
        return jwt.encode(
            payload, self._key.signing_key, algorithm=self._key.algorithm, headers=self._headers
        )

    def _verifying_key(self, token: str) -> Any:
        """The key the token's `kid` names: the current key, or one retired by a rotation
        (tokens.previous_public_keys); an unknown kid is refused."""
        key = self._key
        if not key.previous:
            return key.verifying_key
        found = key.verifying_key_for(jwt.get_unverified_header(token).get("kid"))
        if found is None:
            raise jwt.InvalidKeyError("unknown kid")
        return found

    def session_of(self, token: str, *, use: str) -> str | None:
        """The session a genuine token of this `use` belongs to, even if it has expired (for
        logout: an expired token still names the session to end); None when not genuine."""
        try:
            return str(self._verify(token, use, use, check_times=False)["sid"])
        except Unauthorized:
            return None

    def _verify(
        self, token: str, expected_use: str, label: str, *, check_times: bool = True
    ) -> Mapping[str, Any]:
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthorized(
                f"{label.capitalize()} token is too long", token_presented=True, reason="malformed"
            )
        if not token.isascii():
            raise Unauthorized(f"Invalid {label} token", token_presented=True)
        try:
            # exp/iat are checked below against the injectable clock, not PyJWT's.
            claims: dict[str, Any] = jwt.decode(
                token,
                self._verifying_key(token),
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
        # PyJWT accepts a list of audiences that includes ours; ours is one string, exactly.
        if claims.get("aud") != self._config.audience:
            raise Unauthorized(f"Invalid {label} token", token_presented=True)
        if claims[TOKEN_USE] != expected_use:
            raise Unauthorized(
                f"Token is not an {label} token"
                if label == "access"
                else f"Token is not a {label} token",
                token_presented=True,
                reason="wrong_type",
            )
        exp, iat, sub, jti, sid = (claims[k] for k in ("exp", "iat", "sub", "jti", "sid"))
        if not all(_is_timestamp(v) for v in (exp, iat)):
            raise Unauthorized(f"Invalid {label} token", token_presented=True)
        if not (isinstance(sub, str) and _USER_ID.fullmatch(sub)):
            raise Unauthorized(f"Invalid {label} token", token_presented=True)
        if not (isinstance(jti, str) and isinstance(sid, str) and _HEX_ID.fullmatch(sid)):
            raise Unauthorized(f"Invalid {label} token", token_presented=True)
        if not check_times:
            return claims
        now, leeway = self._clock(), self._config.leeway
        if now >= exp + leeway:
            raise Unauthorized(
                f"{label.capitalize()} token expired", token_presented=True, reason="expired"
            )
        if iat > now + leeway:
            raise Unauthorized(
                f"{label.capitalize()} token issued in the future", token_presented=True
            )
        # Only ours carry no nbf; one that does is honoured (a token minted with a leaked key
        # for later use must not work now).
        nbf = claims.get("nbf")
        if nbf is not None and (not _is_timestamp(nbf) or nbf > now + leeway):
            raise Unauthorized(f"{label.capitalize()} token not yet valid", token_presented=True)
        return claims


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _is_timestamp(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
