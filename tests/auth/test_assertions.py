"""The signed identity assertion, verified by the demo upstream with PyJWT and the gateway's
JWKS URL (real servers, real ports): claims, audience, expiry, key rotation, HS256."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization

from gateway.appkeys import CONFIG, TOKENS
from gateway.auth.assertions import AssertionSigner
from tests.support.gateways import Gateway, GatewayFactory, bearer_of, route
from tests.support.keys import write_private_key
from tests.support.processes import free_port
from upstream_demo import AssertionVerifier, create_upstream_app

ROUTES = [
    route('/whoami'),
    route('/bbb', methods=['GET']),
    route('/plain/**', assertion=False, strip_prefix='/plain', add_prefix='/echo'),
    route('/echo/**', 'optional'),
]  # fmt: skip
HEADER = "X-Gateway-Assertion"


class Stack:
    """A gateway and, behind it, the demo upstream checking assertions against its JWKS."""

    def __init__(self, start: GatewayFactory, server: Callable[..., Any], tmp: Path) -> None:
        self._start, self._server, self.tmp = start, server, tmp
        self.port = free_port()

    async def gateway(self, **tokens: Any) -> Gateway:
        gw: Gateway = await self._start(
            routes=ROUTES,
            upstream_url=f"http://127.0.0.1:{self.port}",
            tokens=tokens,
            assertion={"enabled": True},
        )
        return gw

    async def upstream(self, gw: Gateway) -> AssertionVerifier:
        verifier = self.verifier(gw)
        upstream: TestServer = await self._server(
            create_upstream_app(access_log=None, verifier=verifier), port=self.port
        )
        assert upstream.port == self.port
        return verifier

    @staticmethod
    def verifier(gw: Gateway) -> AssertionVerifier:
        jwks = str(gw.client.make_url("/.well-known/jwks.json"))
        return AssertionVerifier(jwks, audience="demo", issuer="auth-gateway", refetch_after=0)


@pytest.fixture
def stack(
    start_gateway: GatewayFactory, aiohttp_server: Callable[..., Any], tmp_path: Path
) -> Stack:
    return Stack(start_gateway, aiohttp_server, tmp_path)


async def test_the_upstream_verifies_the_assertion_with_the_jwks(stack: Stack) -> None:
    gw = await stack.gateway(private_key_file=str(write_private_key(stack.tmp / "a.pem")))
    await stack.upstream(gw)
    user = await gw.add_user()
    pair = await gw.login()
    resp = await gw.client.get("/whoami", headers={**bearer_of(pair), HEADER: "forged"})
    assert resp.status == 200
    checked = (await resp.json())["assertion"]
    assert checked["verified"] is True, checked
    claims = checked["claims"]
    assert (claims["aud"], claims["iss"], claims["sub"], claims["username"]) == (
        "demo", "auth-gateway", str(user.id), "guang",
    )  # fmt: skip
    assert claims["roles"] == [] and len(claims["sid"]) == 32 and claims["jti"]
    assert 0 < claims["exp"] - claims["iat"] <= 60


async def test_the_assertion_is_cached_for_most_of_its_life(stack: Stack) -> None:
    gw = await stack.gateway(private_key_file=str(write_private_key(stack.tmp / "a.pem")))
    await stack.upstream(gw)
    await gw.add_user()
    pair = await gw.login()
    identity = gw.app[TOKENS].verify_access(pair["access_token"])
    signer = AssertionSigner(gw.app[CONFIG], clock=gw.clock)
    first = signer.assertion(identity, "demo")
    gw.clock.advance(47)
    assert signer.assertion(identity, "demo") == first
    assert signer.assertion(identity, "other") != first  # one per upstream
    gw.clock.advance(2)  # past 80% of 60 s: a new one
    assert signer.assertion(identity, "demo") != first


async def test_client_copies_are_dropped_and_routes_can_opt_out(stack: Stack) -> None:
    gw = await stack.gateway(private_key_file=str(write_private_key(stack.tmp / "a.pem")))
    await stack.upstream(gw)
    await gw.add_user()
    pair = await gw.login()
    spellings = {HEADER: "forged", "x_gateway_assertion": "forged", "X-GATEWAY-ASSERTION": "f"}
    for path, headers in (("/plain/x", bearer_of(pair)), ("/echo/x", {})):
        resp = await gw.client.get(path, headers={**headers, **spellings})
        assert resp.status == 200
        sent = [name for name, _ in (await resp.json())["headers"]]
        assert not [n for n in sent if n.lower().replace("_", "-") == HEADER.lower()], sent


async def test_the_upstream_refuses_another_upstreams_an_expired_and_an_unknown_key(
    stack: Stack, start_gateway: GatewayFactory
) -> None:
    gw = await stack.gateway(private_key_file=str(write_private_key(stack.tmp / "a.pem")))
    verifier = await stack.upstream(gw)
    await gw.add_user()
    identity = gw.app[TOKENS].verify_access((await gw.login())["access_token"])
    signer = AssertionSigner(gw.app[CONFIG])
    assert (await verifier.verify(signer.assertion(identity, "demo")))["sub"] == identity.user_id
    with pytest.raises(jwt.InvalidAudienceError):
        await verifier.verify(signer.assertion(identity, "billing"))
    stale = AssertionSigner(gw.app[CONFIG], clock=lambda: time.time() - 120)
    with pytest.raises(jwt.ExpiredSignatureError):
        await verifier.verify(stale.assertion(identity, "demo"))
    stranger = await stack.gateway(private_key_file=str(write_private_key(stack.tmp / "b.pem")))
    with pytest.raises(jwt.InvalidKeyError):
        await verifier.verify(AssertionSigner(stranger.app[CONFIG]).assertion(identity, "demo"))


async def test_rotation_keeps_old_tokens_verifying_until_the_key_leaves(stack: Stack) -> None:
    old_key, new_key = (
        write_private_key(stack.tmp / "old.pem"),
        write_private_key(stack.tmp / "new.pem"),
    )
    before = await stack.gateway(private_key_file=str(old_key))
    await before.add_user()
    pair = await before.login()
    old_assertion = AssertionSigner(before.app[CONFIG]).assertion(
        before.app[TOKENS].verify_access(pair["access_token"]), "demo"
    )
    # Rotated: the new key signs, the old one's public half still verifies and is published.
    public = stack.tmp / "old.pub.pem"
    public.write_bytes(
        serialization.load_pem_private_key(old_key.read_bytes(), None)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    rotated = await stack.gateway(private_key_file=str(new_key), previous_public_keys=[str(public)])
    verifier = await stack.upstream(rotated)
    jwks = await (await rotated.client.get("/.well-known/jwks.json")).json()
    assert len(jwks["keys"]) == 2
    assert (await rotated.client.get("/bbb", headers=bearer_of(pair))).status == 200
    refreshed = await rotated.client.post(
        "/user/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert refreshed.status == 200
    new_pair = await refreshed.json()
    assert jwt.get_unverified_header(new_pair["access_token"])["kid"] == jwks["keys"][0]["kid"]
    assert (await verifier.verify(old_assertion))["aud"] == "demo"
    whoami = await (await rotated.client.get("/whoami", headers=bearer_of(new_pair))).json()
    assert whoami["assertion"]["verified"] is True
    # The old key retired for good: its tokens and assertions stop.
    retired = await stack.gateway(private_key_file=str(new_key))
    assert (await retired.client.get("/bbb", headers=bearer_of(pair))).status == 401
    assert (await retired.client.get("/bbb", headers=bearer_of(new_pair))).status == 200
    with pytest.raises(jwt.InvalidKeyError):
        await stack.verifier(retired).verify(old_assertion)


async def test_with_a_shared_secret_there_is_no_assertion_and_start_up_says_so(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.auth.assertions"):
        gw = await stack.gateway()
    assert "NO X-Gateway-Assertion is sent" in caplog.text
    await stack.upstream(gw)
    await gw.add_user()
    pair = await gw.login()
    whoami = await (await gw.client.get("/whoami", headers=bearer_of(pair))).json()
    assert whoami["assertion"] == {"verified": False, "reason": "no X-Gateway-Assertion header"}
