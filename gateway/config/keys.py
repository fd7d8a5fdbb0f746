"""Signing keys: an HMAC secret, or an RSA / EC / Ed25519 private key file with a public JWKS."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.utils import base64url_encode

__all__ = [
    "KeyError_",
    "SigningKey",
    "hmac_key",
    "load_private_key",
    "with_previous_keys",
]

MIN_SECRET_BYTES = 32
_ASYMMETRIC = {
    "RS256": rsa.RSAPrivateKey,
    "ES256": ec.EllipticCurvePrivateKey,
    "EdDSA": ed25519.Ed25519PrivateKey,
}


class KeyError_(ValueError):
    """A key that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One pinned algorithm with the keys to sign and verify, and the public JWKS to publish."""

    algorithm: str
    signing_key: Any = field(repr=False)
    verifying_key: Any = field(repr=False)
    kid: str | None = None
    jwks: dict[str, Any] | None = None
    # Keys that signed before a rotation, by kid: they still verify, and are published.
    previous: tuple[tuple[str, Any], ...] = field(default=(), repr=False)

    @property
    def asymmetric(self) -> bool:
        return self.algorithm != "HS256"

    def verifying_key_for(self, kid: object) -> Any:
        """The key a token's `kid` names (the current one when it names none or this one);
        None for a kid that is not ours."""
        if kid is None or kid == self.kid:
            return self.verifying_key
        return next((key for known, key in self.previous if known == kid), None)


def hmac_key(secret: str) -> SigningKey:
    raw = secret.encode()
    if len(raw) < MIN_SECRET_BYTES:
        raise KeyError_(
            f"is {len(raw)} bytes; use at least {MIN_SECRET_BYTES} random bytes "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
        )
    return SigningKey(algorithm="HS256", signing_key=raw, verifying_key=raw)


def load_private_key(path: Path, algorithm: str | None) -> SigningKey:
    """Load a PEM private key; the algorithm defaults to the one the key type implies."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"cannot read {path}: {exc.strerror}") from None
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyError_(f"{path} is not an unencrypted PEM private key: {exc}") from None

    implied = next((alg for alg, kind in _ASYMMETRIC.items() if isinstance(private, kind)), None)
    if implied is None:
        raise KeyError_(
            f"{path}: key type {type(private).__name__} is not RSA, EC P-256 or Ed25519"
        )
    if algorithm not in (None, implied):
        raise KeyError_(f"{path} holds a key for {implied}, not {algorithm}")
    if isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name != "secp256r1":
        raise KeyError_(f"{path}: ES256 needs a P-256 key, not {private.curve.name}")
    if isinstance(private, rsa.RSAPrivateKey) and private.key_size < 2048:
        raise KeyError_(f"{path}: RSA keys must be at least 2048 bits")

    public = private.public_key()
    jwk = public_jwk(public)
    return SigningKey(
        algorithm=implied,
        signing_key=private,
        verifying_key=public,
        kid=jwk["kid"],
        jwks={"keys": [jwk]},
    )


def public_jwk(public: Any) -> dict[str, Any]:
    """The JWK of a public key, with its RFC 7638 thumbprint as `kid`."""
    jwk: dict[str, Any]
    if isinstance(public, rsa.RSAPublicKey):
        jwk, alg = json.loads(RSAAlgorithm.to_jwk(public)), "RS256"
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk, alg = json.loads(ECAlgorithm.to_jwk(public)), "ES256"
    elif isinstance(public, ed25519.Ed25519PublicKey):
        jwk, alg = json.loads(OKPAlgorithm.to_jwk(public)), "EdDSA"
    else:
        raise KeyError_(f"key type {type(public).__name__} is not RSA, EC P-256 or Ed25519")
    jwk.update({"kid": _thumbprint(jwk), "alg": alg, "use": "sig"})
    return jwk


def with_previous_keys(key: SigningKey, paths: list[Path]) -> SigningKey:
    """`key` that also verifies (and publishes) the public keys in `paths` (PEM files: a
    public key, or a retired private key, whose public half is all that is used)."""
    previous: list[tuple[str, Any]] = []
    jwks = list((key.jwks or {"keys": []})["keys"])
    for path in paths:
        public = _read_public(path)
        jwk = public_jwk(public)
        if jwk["alg"] != key.algorithm:
            raise KeyError_(f"{path} is a {jwk['alg']} key; the signing key is {key.algorithm}")
        if jwk["kid"] == key.kid or any(kid == jwk["kid"] for kid, _ in previous):
            continue  # the current key, or listed twice: nothing to add
        previous.append((jwk["kid"], public))
        jwks.append(jwk)
    return SigningKey(
        algorithm=key.algorithm,
        signing_key=key.signing_key,
        verifying_key=key.verifying_key,
        kid=key.kid,
        jwks={"keys": jwks},
        previous=tuple(previous),
    )


def _read_public(path: Path) -> Any:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"cannot read {path}: {exc.strerror}") from None
    try:
        return serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass
    try:
        return serialization.load_pem_private_key(pem, password=None).public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyError_(f"{path} is not a PEM public key (or unencrypted private key)") from exc


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint: a stable key id derived from the public key."""
    required = {
        "RSA": ("e", "kty", "n"),
        "EC": ("crv", "kty", "x", "y"),
        "OKP": ("crv", "kty", "x"),
    }
    members = {name: jwk[name] for name in required[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64url_encode(hashlib.sha256(canonical).digest()).decode()
