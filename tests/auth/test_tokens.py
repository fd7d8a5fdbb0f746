"""Tokens: claims, pinned algorithms, asymmetric keys with a published JWKS."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.auth.tokens import Identity, TokenService
from gateway.config import parse_config
from gateway.errors import ConfigError, Unauthorized
from tests.support.gateways import (
    TEST_SECRET,
    FakeClock,
    Gateway,
    GatewayFactory,
    access_claims,
    bearer_of,
)
from tests.support.keys import write_private_key


def service(clock: FakeClock, **tokens: Any) -> TokenService:
    config = parse_config(
        {
            "tokens": tokens or {"secret": TEST_SECRET},
            "upstreams": {"u": {"url": "http://127.0.0.1:1"}},
        },
        environ={},
    )
    return TokenService(config.tokens, clock=clock)


def claims_of(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    def part(i: int) -> dict[str, Any]:
        segment = token.split(".")[i]
        decoded: dict[str, Any] = json.loads(
            base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        )
        return decoded

    return part(0), part(1)


SID = "0" * 32


def access_for(tokens: TokenService, clock: FakeClock) -> str:
    token, _ = tokens.access_token(
        user_id=7, username="guang", session_id=SID, not_after=clock() + 86400
    )
    return token


def test_access_and_refresh_claims(clock: FakeClock) -> None:
    tokens = service(clock)
    header, access = claims_of(access_for(tokens, clock))
    assert header["alg"] == "HS256"
    assert set(access) == {
        "sub",
        "username",
        "sid",
        "roles",
        "token_use",
        "iss",
        "aud",
        "iat",
        "exp",
        "jti",
    }
    assert (access["sub"], access["username"], access["token_use"]) == ("7", "guang", "access")
    assert access["exp"] - access["iat"] == 1800
    now = int(clock())
    refresh_token = tokens.refresh_token(
        user_id=7, session_id=SID, jti="1" * 32, issued_at=now, expires_at=now + 60
    )
    _, refresh = claims_of(refresh_token)
    assert set(refresh) == {"sub", "sid", "token_use", "iss", "aud", "iat", "exp", "jti"}
    assert (refresh["token_use"], refresh["sid"], refresh["jti"]) == ("refresh", SID, "1" * 32)


def test_access_token_never_outlives_its_session(clock: FakeClock) -> None:
    token, expires_in = service(clock).access_token(
        user_id=7, username="guang", session_id=SID, not_after=clock() + 60
    )
    _, claims = claims_of(token)
    assert expires_in == 60
    assert claims["exp"] == int(clock()) + 60


def test_verified_identity(clock: FakeClock) -> None:
    tokens = service(clock)
    identity = tokens.verify_access(access_for(tokens, clock))
    assert (identity.user_id, identity.username, identity.session_id) == ("7", "guang", SID)


def test_identity_cannot_be_made_outside_the_token_service() -> None:
    with pytest.raises(TypeError):
        Identity(user_id="1", username="admin", session_id=SID, token_id="x", expires_at=0.0)


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "jti", "iss", "aud", "token_use"])
def test_required_claims(clock: FakeClock, missing: str) -> None:
    claims = access_claims(clock())
    del claims[missing]
    with pytest.raises(Unauthorized):
        service(clock).verify_access(jwt.encode(claims, TEST_SECRET, algorithm="HS256"))


@pytest.mark.parametrize(
    "override",
    [{"sub": 1}, {"sub": "abc"}, {"username": 5}, {"exp": "soon"}, {"iat": True}, {"iss": "other"}],
)
def test_malformed_claims(clock: FakeClock, override: dict[str, Any]) -> None:
    claims = access_claims(clock(), **override)
    with pytest.raises(Unauthorized):
        service(clock).verify_access(jwt.encode(claims, TEST_SECRET, algorithm="HS256"))


def test_token_issued_in_the_future_is_refused(clock: FakeClock) -> None:
    tokens = service(clock)
    clock.advance(120)
    token = access_for(tokens, clock)
    clock.advance(-120)
    with pytest.raises(Unauthorized, match="issued in the future"):
        tokens.verify_access(token)


def test_oversized_token_is_refused_before_decoding(clock: FakeClock) -> None:
    with pytest.raises(Unauthorized, match="too long"):
        service(clock).verify_access("a" * 100_000)


@pytest.mark.parametrize(
    ("make_key", "algorithm", "kty"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", "RSA"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256", "EC"),
        (ed25519.Ed25519PrivateKey.generate, "EdDSA", "OKP"),
    ],
)
async def test_asymmetric_keys_sign_and_publish_a_jwks(
    start_gateway: GatewayFactory, tmp_path: Path, make_key: Any, algorithm: str, kty: str
) -> None:
    key_file = write_private_key(tmp_path / "key.pem", make_key())
    gw: Gateway = await start_gateway(tokens={"private_key_file": str(key_file)}, demo_user=True)
    pair = await gw.login()
    header, _ = claims_of(pair["access_token"])
    assert header["alg"] == algorithm

    jwks = await (await gw.client.get("/.well-known/jwks.json")).json()
    [jwk] = jwks["keys"]
    assert (jwk["kty"], jwk["alg"], jwk["kid"]) == (kty, algorithm, header["kid"])
    assert "d" not in jwk  # never the private part
    public = jwt.PyJWK(jwk).key
    claims = jwt.decode(
        pair["access_token"], public, algorithms=[algorithm], audience="auth-gateway"
    )
    assert claims["username"] == "guang"
    resp = await gw.client.get("/bbb", headers=bearer_of(pair))
    assert resp.status == 200


async def test_hs256_signed_with_the_public_key_is_refused(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    gw: Gateway = await start_gateway(
        tokens={"private_key_file": str(write_private_key(tmp_path / "k.pem", private))},
        demo_user=True,
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = access_claims(gw.clock())
    # PyJWT refuses to HMAC with a PEM key, so build the confused token by hand.
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = (
        b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        + "."
        + b64(json.dumps(claims).encode())
    )
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = signing_input + "." + b64(signature)
    resp = await gw.client.get("/bbb", headers={"Authorization": f"Bearer {forged}"})
    assert resp.status == 401


def test_key_file_problems_are_config_errors(tmp_path: Path) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cases = {
        "missing.pem": "cannot read",
        write_private_key(tmp_path / "small.pem", small).name: "at least 2048 bits",
    }
    (tmp_path / "junk.pem").write_text("not a key")
    cases["junk.pem"] = "is not an unencrypted PEM private key"
    for name, fragment in cases.items():
        with pytest.raises(ConfigError) as info:
            parse_config(
                {"tokens": {"private_key_file": name}, "upstreams": {"u": {"url": "http://h"}}},
                environ={},
                base_dir=tmp_path,
            )
        assert any(fragment in p for p in info.value.problems), info.value.problems


def test_algorithm_must_fit_the_key(tmp_path: Path) -> None:
    key = write_private_key(tmp_path / "ed.pem", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "tokens": {"private_key_file": str(key), "algorithm": "RS256"},
                "upstreams": {"u": {"url": "http://h"}},
            },
            environ={},
        )
    assert any("holds a key for EdDSA, not RS256" in p for p in info.value.problems)


def test_verified_tokens_are_cached_but_still_expire(clock: FakeClock) -> None:
    tokens = service(clock)
    token = access_for(tokens, clock)
    first = tokens.verify_access(token)
    assert tokens.verify_access(token) is first  # no second signature check
    clock.advance(1800 + 31)
    with pytest.raises(Unauthorized, match="Access token expired"):
        tokens.verify_access(token)
    with pytest.raises(Unauthorized, match="Access token expired"):
        tokens.verify_access(token)


def test_verified_cache_is_bounded(clock: FakeClock) -> None:
    config = parse_config(
        {"tokens": {"secret": TEST_SECRET}, "upstreams": {"u": {"url": "http://127.0.0.1:1"}}},
        environ={},
    )
    tokens = TokenService(config.tokens, clock=clock, cache_size=3)
    issued = [access_for(tokens, clock) for _ in range(5)]
    identities = [tokens.verify_access(t) for t in issued]
    assert tokens.verify_access(issued[-1]) is identities[-1]
    assert tokens.verify_access(issued[0]) is not identities[0]  # evicted, verified afresh
    assert tokens.verify_access(issued[0]) == identities[0]
