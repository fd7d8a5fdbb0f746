"""Signing keys: an HMAC secret, or an RSA / EC / Ed25519 private key file with a public JWKS."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.utils import base64url_encode

__all__ = ["KeyError_", "SigningKey", "hmac_key", "load_private_key"]

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
    if isinstance(private, rsa.RSAPrivateKey):
        jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    else:
        assert isinstance(private, ed25519.Ed25519PrivateKey)  # noqa: S101 - narrowed above
        jwk = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    kid = _thumbprint(jwk)
    jwk.update({"kid": kid, "alg": implied, "use": "sig"})
    return SigningKey(
        algorithm=implied, signing_key=private, verifying_key=public, kid=kid, jwks={"keys": [jwk]}
    )


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
