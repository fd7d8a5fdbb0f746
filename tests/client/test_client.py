"""The Python client against a real gateway: one refresh for many failures, clean failures."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.appkeys import METRICS, SESSIONS, STORE
from gateway_client import (
    FileTokenStore,
    GatewayClient,
    GatewayClientError,
    LoginRequired,
    RefreshFailed,
    Tokens,
)
from tests.support.gateways import Gateway, GatewayFactory, route


def refreshes(gw: Gateway, outcome: str = "rotated") -> float:
    return gw.app[METRICS].refreshes.labels(outcome).value


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(str(gateway.client.make_url(""))) as c:
        await c.login("guang", "123456")
        yield c


async def test_many_concurrent_failures_cause_one_refresh(
    gateway: Gateway, client: GatewayClient
) -> None:
    gateway.clock.advance(1800 + 31)  # the access token has expired
    responses = await asyncio.gather(*(client.get("/bbb") for _ in range(30)))
    assert [r.status for r in responses] == [200] * 30
    assert [await r.text() for r in responses] == ["bbb"] * 30
    assert refreshes(gateway) == 1
    assert client.refresh_count == 1
    # Later requests use the new token directly.
    assert (await client.get("/bbb")).status == 200
    assert refreshes(gateway) == 1


async def test_session_over_rejects_every_waiter_once(gateway: Gateway) -> None:
    calls: list[str] = []
    async with GatewayClient(
        str(gateway.client.make_url("")), on_login_required=lambda: calls.append("login!")
    ) as client:
        await client.login("guang", "123456")
        await gateway.app[STORE].revoke_user_sessions(1, reason="test", now=gateway.clock())
        gateway.clock.advance(1800 + 31)
        results = await asyncio.gather(
            *(client.get("/bbb") for _ in range(10)), return_exceptions=True
        )
        assert all(isinstance(r, LoginRequired) for r in results), results
        assert calls == ["login!"]
        assert client.tokens is None
        # Nothing hangs afterwards: without a token the gateway's 401 comes straight back.
        assert (await asyncio.wait_for(client.get("/bbb"), 5)).status == 401
        assert calls == ["login!"]


async def test_transient_refresh_failure_keeps_the_tokens(
    gateway: Gateway, client: GatewayClient
) -> None:
    store = gateway.app[STORE]
    await store.close()  # the database is gone: the gateway's refresh answers 503
    gateway.clock.advance(1800 + 31)
    results = await asyncio.gather(*(client.get("/bbb") for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, RefreshFailed) for r in results), results
    assert client.tokens is not None
    await store.open()  # back: the kept refresh token works
    assert (await client.get("/bbb")).status == 200


async def test_403_never_refreshes(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(routes=[route("/echo/**", roles=["admin"])], demo_user=True)
    async with GatewayClient(str(gw.client.make_url(""))) as client:
        await client.login("guang", "123456")
        assert (await client.get("/echo/x")).status == 403
        assert client.refresh_count == 0


async def test_a_replay_that_fails_again_is_not_refreshed_again(
    gateway_before: GatewayFactory,
) -> None:
    hits: list[str] = []

    async def always_401(request: web.Request) -> web.Response:
        hits.append(request.headers.get("X-User-Id", ""))
        return web.json_response(
            {"statusCode": 401, "message": "upstream says no", "error": "Unauthorized"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )

    gw: Gateway = await gateway_before(
        {"/no": always_401},
        routes=[route("/no")],
    )
    await gw.add_user()
    async with GatewayClient(str(gw.client.make_url(""))) as client:
        await client.login("guang", "123456")
        response = await client.get("/no")
        assert response.status == 401
        assert client.refresh_count == 1
        assert hits == ["1", "1"]  # the original and one replay, no loop


async def test_stream_bodies_are_not_replayed(gateway: Gateway, client: GatewayClient) -> None:
    gateway.clock.advance(1800 + 31)

    async def body() -> AsyncIterator[bytes]:
        yield b"once"

    response = await client.post("/echo/upload", data=body())
    assert response.status == 200  # /echo is public: the body went through once
    response = await client.request("PUT", "/whoami", data=body())
    assert response.status in (401, 405)
    assert client.refresh_count == 0


async def test_logout_ends_the_session_and_voids_a_refresh_in_flight(
    gateway: Gateway, client: GatewayClient
) -> None:
    tokens = client.tokens
    assert tokens is not None
    # Hold the gateway's refresh until the client has logged out meanwhile.
    sessions = gateway.app[SESSIONS]
    refreshing, release = asyncio.Event(), asyncio.Event()
    real_refresh = sessions.refresh

    async def held_refresh(token: str, *args: Any) -> Any:
        refreshing.set()
        await release.wait()
        return await real_refresh(token, *args)

    sessions.refresh = held_refresh  # type: ignore[method-assign, assignment]
    gateway.clock.advance(1800 + 31)
    request = asyncio.create_task(client.get("/bbb"))
    await asyncio.wait_for(refreshing.wait(), 5)  # the refresh is in flight
    await client.logout()
    release.set()
    with pytest.raises(LoginRequired):
        await request
    assert client.tokens is None
    refreshed = await gateway.client.post(
        "/user/refresh", json={"refresh_token": tokens.refresh_token}
    )
    assert refreshed.status == 401


async def test_refresh_ahead_of_expiry(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(tokens={"access_ttl": "60s"}, demo_user=True)
    async with GatewayClient(str(gw.client.make_url("")), refresh_ahead=120) as client:
        await client.login("guang", "123456")
        assert (await client.get("/bbb")).status == 200
        assert client.refresh_count == 1  # refreshed before sending, no 401 needed
        assert refreshes(gw) == 1


async def test_wrong_credentials_raise_login_required(gateway: Gateway) -> None:
    async with GatewayClient(str(gateway.client.make_url(""))) as client:
        with pytest.raises(LoginRequired, match="Invalid username or password"):
            await client.login("guang", "nope")


def test_file_token_store(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "cli" / "tokens.json")
    assert store.load() is None
    store.save(Tokens("a", "r"))
    assert store.load() == Tokens("a", "r")
    mode = stat.S_IMODE((tmp_path / "cli" / "tokens.json").stat().st_mode)
    assert mode == 0o600
    store.clear()
    assert store.load() is None


def test_file_token_store_expands_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    store = FileTokenStore("~/.cache/me/tokens.json")
    store.save(Tokens("a", "r"))
    assert (tmp_path / "home" / ".cache" / "me" / "tokens.json").is_file()
    assert not (tmp_path / "~").exists()  # no literal "~" folder in the working directory
    assert FileTokenStore("~/.cache/me/tokens.json").load() == Tokens("a", "r")


async def test_sessions_end_session_and_logout_everywhere(gateway: Gateway) -> None:
    base = str(gateway.client.make_url(""))
    async with GatewayClient(base) as phone, GatewayClient(base) as laptop:
        await phone.login("guang", "123456")
        gateway.clock.advance(1)
        await laptop.login("guang", "123456")
        listed = await laptop.sessions()
        assert [s["current"] for s in listed] == [False, True]
        await laptop.end_session(listed[0]["id"])
        with pytest.raises(LoginRequired):
            await phone.sessions()  # its session is over: the refresh is refused
        assert phone.tokens is None
        with pytest.raises(GatewayClientError, match="404"):
            await laptop.end_session(listed[0]["id"])
        gateway.clock.advance(1)
        await phone.login("guang", "123456")
        assert await laptop.logout_everywhere() == 2
        assert laptop.tokens is None
        with pytest.raises(LoginRequired):
            await phone.get("/bbb")  # the other device's session ended too
