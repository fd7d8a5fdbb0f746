"""Login and refresh against real databases (SQLite and MariaDB) and the real demo upstream."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import jwt
import pytest

from gateway.appkeys import STORE
from tests.support.errors import error_body
from tests.support.gateways import TEST_SECRET, Gateway, GatewayFactory, bearer_of


async def test_whole_flow_login_public_protected_refresh(gateway: Gateway) -> None:
    client = gateway.client
    public = await client.get("/aaa")
    assert (public.status, await public.text()) == (200, "aaa")

    anonymous = await client.get("/bbb")
    assert anonymous.status == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert "invalid_token" not in anonymous.headers["WWW-Authenticate"]
    assert await anonymous.json() == error_body(401, "Unauthorized", "Missing bearer token")

    pair = await gateway.login()
    assert set(pair) == {
        "access_token",
        "refresh_token",
        "token_type",
        "expires_in",
        "refresh_expires_in",
    }
    assert (pair["token_type"], pair["expires_in"], pair["refresh_expires_in"]) == (
        "Bearer",
        1800,
        7 * 86400,
    )
    authorized = await client.get("/bbb", headers=bearer_of(pair))
    assert (authorized.status, await authorized.text()) == (200, "bbb")

    by_get = await client.get("/user/refresh", params={"refresh_token": pair["refresh_token"]})
    assert by_get.status == 200
    assert by_get.headers["Cache-Control"] == "no-store"
    new_pair = await by_get.json()
    by_post = await client.post("/user/refresh", json={"refresh_token": new_pair["refresh_token"]})
    assert by_post.status == 200
    newest = await by_post.json()
    again = await client.get("/bbb", headers={"Authorization": f"Bearer {newest['access_token']}"})
    assert again.status == 200


async def test_upstream_receives_identity_of_the_token_owner(gateway: Gateway) -> None:
    user = await gateway.add_user("alice", "correct horse")
    pair = await gateway.login("alice", "correct horse")
    resp = await gateway.client.get(
        "/whoami", headers={"Authorization": f"bearer {pair['access_token']}"}
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["user_id"] == str(user.id)
    assert body["username"] == "alice"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "Request body is empty; expected a JSON object"),
        (b"not json", "Request body is not valid JSON"),
        (b"\xff\xfe", "Request body is not valid UTF-8"),
        (b"[1, 2]", "Request body must be a JSON object, not an array"),
        (b'"guang"', "Request body must be a JSON object, not a string"),
        (b'{"password": "123456"}', "'username' is required"),
        (b'{"username": "guang"}', "'password' is required"),
        (b'{"username": null, "password": "123456"}', "'username' is required"),
        (b'{"username": 1, "password": "123456"}', "'username' must be a string, not a number"),
        (b'{"username": ["guang"], "password": "1"}', "'username' must be a string, not an array"),
        (b'{"username": "guang", "password": true}', "'password' must be a string, not a boolean"),
        (b'{"username": "guang", "password": {}}', "'password' must be a string, not an object"),
        (b'{"username": "", "password": "123456"}', "'username' must not be empty"),
        (b'{"username": "guang", "password": ""}', "'password' must not be empty"),
        (
            b'{"username": "guang", "username": "admin", "password": "123456"}',
            "Request body has the key 'username' more than once",
        ),
        (
            b'{"username": "guang", "password": "' + b"x" * 20000 + b'"}',
            "Request body is larger than 16384 bytes",
        ),
    ],
)
async def test_bad_login_bodies_get_400_saying_what_is_wrong(
    gateway: Gateway, body: bytes, message: str
) -> None:
    resp = await gateway.client.post(
        "/user/login", data=body, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert await resp.json() == error_body(400, "Bad Request", message)


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/user/login", "text/plain"),  # what a cross-site <form enctype="text/plain"> sends
        ("/user/login", "application/x-www-form-urlencoded"),
        ("/user/login", "multipart/form-data; boundary=x"),
        ("/user/login", "application/jsonx"),
        ("/user/login", None),  # no Content-Type at all
        ("/user/refresh", "text/plain"),
        ("/user/logout", "text/plain"),
    ],
)
async def test_json_endpoints_require_application_json(
    gateway: Gateway, path: str, content_type: str | None
) -> None:
    pair = await gateway.login()
    body = {"username": "guang", "password": "123456", "refresh_token": pair["refresh_token"]}
    headers = {"Content-Type": content_type} if content_type else {}
    resp = await gateway.client.post(
        path, data=json.dumps(body).encode(), headers=headers, skip_auto_headers=["Content-Type"]
    )
    assert resp.status == 415
    assert await resp.json() == error_body(
        415,
        "Unsupported Media Type",
        "Send the body as application/json (Content-Type: application/json)",
    )
    assert "access_token" not in resp.headers.get("Set-Cookie", "")
    # The refresh token was not spent or revoked by the refused requests.
    refreshed = await gateway.refresh(pair)
    assert refreshed.status == 200


async def test_json_endpoints_take_application_json_with_parameters(gateway: Gateway) -> None:
    await gateway.add_user("alice", "pw-alice")
    resp = await gateway.client.post(
        "/user/login",
        data=b'{"username": "alice", "password": "pw-alice"}',
        headers={"Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert resp.status == 200
    assert "access_token" in await resp.json()


async def test_missing_username_never_logs_in_as_some_user(gateway: Gateway) -> None:
    # A reference implementation looked up `WHERE username = undefined` and got the first user.
    await gateway.add_user("first", "password-1")
    for body in ({"password": "123456"}, {"username": None, "password": "123456"}):
        resp = await gateway.client.post("/user/login", json=body)
        assert resp.status == 400
        assert "access_token" not in await resp.text()


async def test_unknown_user_and_wrong_password_look_the_same(gateway: Gateway) -> None:
    answers = []
    for username, password in (("guang", "wrong"), ("nobody", "123456"), ("bad name!", "x")):
        resp = await gateway.client.post(
            "/user/login", json={"username": username, "password": password}
        )
        answers.append((resp.status, await resp.json()))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0] == (
        401,
        error_body(401, "Unauthorized", "Invalid username or password"),
    )


async def test_unknown_user_costs_a_password_verification(gateway: Gateway) -> None:
    # Timing: an unknown user must not answer much faster than a wrong password. Compare medians
    # of several attempts as a ratio (timings on shared machines are noisy).
    async def median_seconds(username: str) -> float:
        samples = []
        for _ in range(7):
            start = time.perf_counter()
            await gateway.client.post("/user/login", json={"username": username, "password": "no"})
            samples.append(time.perf_counter() - start)
        return sorted(samples)[3]

    known, unknown = await median_seconds("guang"), await median_seconds("nobody")
    assert unknown > known * 0.5, (known, unknown)


async def test_disabled_user_cannot_log_in_or_refresh(gateway: Gateway) -> None:
    pair = await gateway.login()
    assert await gateway.app[STORE].set_disabled("guang", True)
    login = await gateway.client.post(
        "/user/login", json={"username": "guang", "password": "123456"}
    )
    assert login.status == 401
    refresh = await gateway.refresh(pair)
    assert refresh.status == 401
    assert (await refresh.json())["message"] == "User no longer exists or is disabled"


async def test_deleted_user_cannot_refresh(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway()
    user = await gw.add_user("temp", "temp-password")
    pair = await gw.login("temp", "temp-password")
    await gw.app[STORE].execute("DELETE FROM gateway_users WHERE id = ?", (user.id,))  # type: ignore[attr-defined]
    resp = await gw.client.get("/user/refresh", params={"refresh_token": pair["refresh_token"]})
    assert resp.status == 401


async def test_refresh_token_is_rejected_as_access_token(gateway: Gateway) -> None:
    pair = await gateway.login()
    resp = await gateway.client.get(
        "/bbb", headers={"Authorization": f"Bearer {pair['refresh_token']}"}
    )
    assert resp.status == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert (await resp.json())["message"] == "Token is not an access token"


async def test_access_token_is_rejected_as_refresh_token(gateway: Gateway) -> None:
    pair = await gateway.login()
    resp = await gateway.client.post("/user/refresh", json={"refresh_token": pair["access_token"]})
    assert resp.status == 401
    assert (await resp.json())["message"] == "Token is not a refresh token"


async def test_expired_access_token_is_rejected_after_the_leeway(gateway: Gateway) -> None:
    pair = await gateway.login()
    headers = {"Authorization": f"Bearer {pair['access_token']}"}
    gateway.clock.advance(1800 + 29)  # inside the 30 s leeway
    assert (await gateway.client.get("/bbb", headers=headers)).status == 200
    gateway.clock.advance(2)
    resp = await gateway.client.get("/bbb", headers=headers)
    assert resp.status == 401
    assert (await resp.json())["message"] == "Access token expired"
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


async def test_expired_refresh_token_is_rejected(gateway: Gateway) -> None:
    pair = await gateway.login()
    gateway.clock.advance(7 * 86400 + 31)
    resp = await gateway.client.get(
        "/user/refresh", params={"refresh_token": pair["refresh_token"]}
    )
    assert resp.status == 401
    assert (await resp.json())["message"] == "Refresh token expired"


async def test_configured_ttls_are_used(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(
        tokens={"access_ttl": "15s", "refresh_ttl": "1h"}, demo_user=True
    )
    pair = await gw.login()
    assert (pair["expires_in"], pair["refresh_expires_in"]) == (15, 3600)
    claims = jwt.decode(
        pair["access_token"], TEST_SECRET, algorithms=["HS256"], audience="auth-gateway"
    )
    assert claims["exp"] - claims["iat"] == 15


@pytest.mark.parametrize(
    ("params", "status"),
    [({}, 400), ({"refresh_token": ""}, 400), ({"refresh_token": "garbage"}, 401)],
)
async def test_bad_refresh_requests(gateway: Gateway, params: dict[str, str], status: int) -> None:
    resp = await gateway.client.get("/user/refresh", params=params)
    assert resp.status == status
    body = await resp.json()
    assert body["statusCode"] == status


async def test_refresh_by_post_needs_a_string_token(gateway: Gateway) -> None:
    resp = await gateway.client.post("/user/refresh", json={"refresh_token": 5})
    assert resp.status == 400
    assert (await resp.json())["message"] == "'refresh_token' must be a string, not a number"


async def test_refresh_with_two_query_tokens_is_refused(gateway: Gateway) -> None:
    pair = await gateway.login()
    token = pair["refresh_token"]
    resp = await gateway.client.get(f"/user/refresh?refresh_token={token}&refresh_token={token}")
    assert resp.status == 400


async def test_login_and_refresh_ignore_a_stale_authorization_header(gateway: Gateway) -> None:
    # Classic clients send their (expired) access token on every request, login included.
    stale = {"Authorization": "Bearer expired.garbage.token"}
    login = await gateway.client.post(
        "/user/login", json={"username": "guang", "password": "123456"}, headers=stale
    )
    assert login.status == 200
    pair = await login.json()
    refresh = await gateway.client.get(
        "/user/refresh", params={"refresh_token": pair["refresh_token"]}, headers=stale
    )
    assert refresh.status == 200


async def test_wrong_methods_on_own_endpoints_get_405(gateway: Gateway) -> None:
    login = await gateway.client.get("/user/login")
    assert login.status == 405
    assert login.headers["Allow"] == "POST"
    refresh = await gateway.client.delete("/user/refresh")
    assert refresh.status == 405
    assert refresh.headers["Allow"] == "GET, POST"


async def test_concurrent_logins_all_succeed(gateway: Gateway) -> None:
    results = await asyncio.gather(*(gateway.login() for _ in range(10)))
    tokens = {r["access_token"] for r in results}
    assert len(tokens) == 10  # every token has its own jti


async def test_jwks_is_404_for_a_shared_secret(gateway: Gateway) -> None:
    resp = await gateway.client.get("/.well-known/jwks.json")
    assert resp.status == 404
    body: dict[str, Any] = await resp.json()
    assert body["statusCode"] == 404
