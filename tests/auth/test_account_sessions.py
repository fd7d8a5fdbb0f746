"""A user's own sessions (GET/DELETE /user/sessions, logout everywhere) by Bearer token and by
cookie, on SQLite and MariaDB with the real demo upstream."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.cookies import FETCH, Jar, log_in_by_form, origin_of
from tests.support.errors import error_body
from tests.support.gateways import Gateway, bearer_of

PHONE, LAPTOP = "Phone/1.0", "Laptop/2.0"
NO_CALLER = "Send the access token as 'Authorization: Bearer', or the session cookies"


async def login_as(gw: Gateway, agent: str, username: str = "guang") -> dict[str, Any]:
    gw.clock.advance(1)  # the list is ordered by login time
    resp = await gw.client.post(
        "/user/login",
        json={"username": username, "password": "123456"},
        headers={"User-Agent": agent},
    )
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def listed(gw: Gateway, headers: dict[str, str]) -> list[dict[str, Any]]:
    resp = await gw.client.get("/user/sessions", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    sessions: list[dict[str, Any]] = (await resp.json())["sessions"]
    return sessions


async def test_the_list_shows_each_live_session_with_its_clients(gateway: Gateway) -> None:
    phone = await login_as(gateway, PHONE)
    laptop = await login_as(gateway, LAPTOP)
    refreshed = await gateway.client.post(
        "/user/refresh", json={"refresh_token": phone["refresh_token"]},
        headers={"User-Agent": "Phone/1.1"},
    )  # fmt: skip
    assert refreshed.status == 200
    sessions = await listed(gateway, bearer_of(laptop))
    assert [s["login"]["user_agent"] for s in sessions] == [PHONE, LAPTOP]
    assert [s["last_refresh"]["user_agent"] for s in sessions] == ["Phone/1.1", LAPTOP]
    assert [s["current"] for s in sessions] == [False, True]
    assert {s["login"]["address"] for s in sessions} == {"127.0.0.1"}
    assert set(sessions[0]) == {
        "id", "created_at", "last_used_at", "expires_at", "login", "last_refresh", "current",
    }  # fmt: skip
    assert sessions[0]["created_at"].endswith("Z")


async def test_an_ended_session_leaves_the_list_and_its_tokens_stop(gateway: Gateway) -> None:
    phone = await login_as(gateway, PHONE)
    laptop = await login_as(gateway, LAPTOP)
    phone_id = next(s["id"] for s in await listed(gateway, bearer_of(laptop)) if not s["current"])
    resp = await gateway.client.delete(f"/user/sessions/{phone_id}", headers=bearer_of(laptop))
    assert (resp.status, await resp.json()) == (200, {"message": "Session ended"})
    assert len(await listed(gateway, bearer_of(laptop))) == 1
    # This process knows at once; other processes within sessions.revocation_poll.
    assert (await gateway.client.get("/bbb", headers=bearer_of(phone))).status == 401
    again = await gateway.client.post(
        "/user/refresh", json={"refresh_token": phone["refresh_token"]}
    )
    assert again.status == 401
    assert (await gateway.client.get("/bbb", headers=bearer_of(laptop))).status == 200
    gone = await gateway.client.delete(f"/user/sessions/{phone_id}", headers=bearer_of(laptop))
    assert gone.status == 404


async def test_another_users_session_is_not_found(gateway: Gateway) -> None:
    await gateway.add_user("mallory", "123456")
    victim = await login_as(gateway, PHONE)
    mallory = await login_as(gateway, LAPTOP, username="mallory")
    victim_id = (await listed(gateway, bearer_of(victim)))[0]["id"]
    assert [s["current"] for s in await listed(gateway, bearer_of(mallory))] == [True]
    resp = await gateway.client.delete(f"/user/sessions/{victim_id}", headers=bearer_of(mallory))
    assert resp.status == 404
    assert await resp.json() == error_body(
        404, "Not Found", "You have no live session with that id"
    )
    assert (await gateway.client.get("/bbb", headers=bearer_of(victim))).status == 200


@pytest.mark.parametrize("session_id", ["0" * 32, "not-a-session", "A" * 32])
async def test_unknown_or_malformed_ids_are_not_found(gateway: Gateway, session_id: str) -> None:
    pair = await gateway.login()
    resp = await gateway.client.delete(f"/user/sessions/{session_id}", headers=bearer_of(pair))
    assert resp.status == 404


async def test_the_endpoints_need_a_live_session(gateway: Gateway) -> None:
    pair = await gateway.login()
    for method, path in (("GET", "/user/sessions"), ("DELETE", f"/user/sessions/{'0' * 32}")):
        missing = await gateway.client.request(method, path)
        assert missing.status == 401
        assert (await missing.json())["error"] == "Unauthorized"
        bad = await gateway.client.request(method, path, headers={"Authorization": "Bearer x"})
        assert bad.status == 401
    await gateway.client.post("/user/logout", headers=bearer_of(pair))
    assert (await gateway.client.get("/user/sessions", headers=bearer_of(pair))).status == 401


async def test_wrong_methods_get_405_with_allow(gateway: Gateway) -> None:
    pair = await gateway.login()
    listing = await gateway.client.post("/user/sessions", headers=bearer_of(pair))
    assert (listing.status, listing.headers["Allow"]) == (405, "GET, HEAD")
    one = await gateway.client.get(f"/user/sessions/{'0' * 32}", headers=bearer_of(pair))
    assert (one.status, one.headers["Allow"]) == (405, "DELETE")


async def test_logout_all_ends_every_session_of_the_caller_only(gateway: Gateway) -> None:
    await gateway.add_user("alice", "123456")
    mine = [await login_as(gateway, agent) for agent in (PHONE, LAPTOP, "Tablet/3")]
    alices = await login_as(gateway, PHONE, username="alice")
    resp = await gateway.client.post("/user/logout", json={"all": True}, headers=bearer_of(mine[0]))
    assert (resp.status, await resp.json()) == (
        200,
        {"message": "Logged out everywhere", "ended": 3},
    )
    for pair in mine:
        assert (await gateway.client.get("/bbb", headers=bearer_of(pair))).status == 401
        refreshed = await gateway.client.post(
            "/user/refresh", json={"refresh_token": pair["refresh_token"]}
        )
        assert refreshed.status == 401
    assert (await gateway.client.get("/bbb", headers=bearer_of(alices))).status == 200


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"all": "yes"}, 400, "'all' must be true (end every session) or false"),
        ({"all": True}, 401, NO_CALLER),
        ({"all": False}, 400, "'refresh_token' is required"),
    ],
)
async def test_logout_all_refuses_bad_requests(
    gateway: Gateway, body: dict[str, Any], status: int, message: str
) -> None:
    resp = await gateway.client.post("/user/logout", json=body)
    assert resp.status == status
    assert (await resp.json())["message"] == message


# --- by cookie -------------------------------------------------------------------------------


async def test_a_browser_lists_and_ends_its_sessions_by_cookie(gateway: Gateway) -> None:
    other = await login_as(gateway, PHONE)
    jar = Jar()
    gateway.clock.advance(1)
    assert (await log_in_by_form(gateway.client, jar)).status == 303
    sessions = await listed(gateway, jar.headers(FETCH))
    assert [s["current"] for s in sessions] == [False, True]
    # Ending one by cookie is an unsafe request: the Origin check applies.
    path = f"/user/sessions/{sessions[0]['id']}"
    refused = await gateway.client.delete(
        path, headers=jar.headers(FETCH, {"Origin": "https://evil.example"})
    )
    assert refused.status == 403
    ended = await gateway.client.delete(
        path, headers=jar.headers(FETCH, {"Origin": origin_of(gateway.client)})
    )
    assert ended.status == 200
    assert (await gateway.client.get("/bbb", headers=bearer_of(other))).status == 401
    assert len(await listed(gateway, jar.headers(FETCH))) == 1


async def test_logout_all_by_cookie_clears_the_cookies(gateway: Gateway) -> None:
    bearer_pair = await login_as(gateway, PHONE)
    jar = Jar()
    assert (await log_in_by_form(gateway.client, jar)).status == 303
    resp = await gateway.client.post(
        "/user/logout",
        json={"all": True},
        headers=jar.headers(FETCH, {"Origin": origin_of(gateway.client)}),
    )
    assert (resp.status, (await resp.json())["ended"]) == (200, 2)
    jar.update(resp)
    assert not any(name.endswith(("-access", "-refresh")) for name in jar.values)
    assert (await gateway.client.get("/bbb", headers=bearer_of(bearer_pair))).status == 401
