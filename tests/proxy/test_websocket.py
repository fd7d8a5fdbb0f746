"""WebSocket upgrades: authenticated at the handshake, relayed both ways, close codes kept."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from gateway.appkeys import STORE
from gateway.auth.sessions import end_user_sessions
from tests.support.gateways import Gateway, GatewayFactory, route

# /ws needs a token; /ws-open reaches the same socket without one.
WS_ROUTES = [
    route("/ws"),
    route("/ws-open", "public", strip_prefix="/ws-open", add_prefix="/ws"),
]


@pytest.fixture
async def ws_gateway(start_gateway: GatewayFactory) -> Gateway:
    gw: Gateway = await start_gateway(routes=WS_ROUTES, demo_user=True)
    return gw


async def access_token(gw: Gateway) -> str:
    return str((await gw.login())["access_token"])


async def test_without_a_token_the_handshake_is_401(ws_gateway: Gateway) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await ws_gateway.client.ws_connect("/ws")
    assert info.value.status == 401


@pytest.mark.parametrize("how", ["header", "query", "subprotocol"])
async def test_token_in_header_query_or_subprotocol(ws_gateway: Gateway, how: str) -> None:
    token = await access_token(ws_gateway)
    kwargs: dict[str, Any] = {}
    path = "/ws?keep=1"
    if how == "header":
        kwargs["headers"] = {"Authorization": f"Bearer {token}"}
    elif how == "query":
        path += f"&access_token={token}"
    else:
        kwargs["protocols"] = ("bearer", token)
    async with ws_gateway.client.ws_connect(path, **kwargs) as ws:
        hello = await ws.receive_json(timeout=5)
        assert hello["user_id"] == "1"
        assert hello["query"] == "keep=1"  # the token parameter never reaches the upstream
        await ws.send_str("ping me")
        assert await ws.receive_str(timeout=5) == "ping me"
        await ws.send_bytes(b"\x00\x01binary")
        assert await ws.receive_bytes(timeout=5) == b"\x00\x01binary"
        # The upstream's subprotocol choice wins; "bearer" is answered only when it chose none.
        assert ws.protocol == ("bearer" if how == "subprotocol" else None)


async def test_subprotocols_are_negotiated_with_the_upstream(ws_gateway: Gateway) -> None:
    token = await access_token(ws_gateway)
    async with ws_gateway.client.ws_connect("/ws", protocols=("bearer", token, "echo")) as ws:
        assert ws.protocol == "echo"


async def test_bad_tokens_are_refused(ws_gateway: Gateway) -> None:
    for kwargs in (
        {"protocols": ("bearer", "garbage")},
        {"protocols": ("bearer",)},
        {"headers": {"Authorization": "Bearer garbage"}},
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await ws_gateway.client.ws_connect("/ws?access_token=also-garbage", **kwargs)
        assert info.value.status == 401


async def test_upstream_close_code_reaches_the_client(ws_gateway: Gateway) -> None:
    token = await access_token(ws_gateway)
    async with ws_gateway.client.ws_connect(f"/ws?access_token={token}") as ws:
        await ws.receive_json(timeout=5)
        await ws.send_str("close:4001")
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE
        assert (message.data, message.extra) == (4001, "closed by upstream")


async def test_client_close_code_reaches_the_upstream(gateway_before: GatewayFactory) -> None:
    closed: asyncio.Future[tuple[int | None, str]] = asyncio.get_running_loop().create_future()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        closed.set_result((ws.close_code, request.headers.get("X-User-Id", "")))
        return ws

    gw: Gateway = await gateway_before(
        {"/ws": handler},
        routes=[route("/ws")],
    )
    await gw.add_user()
    ws = await gw.client.ws_connect(
        "/ws", headers={"Authorization": f"Bearer {await access_token(gw)}"}
    )
    await ws.close(code=4002, message=b"bye")
    assert await asyncio.wait_for(closed, 5) == (4002, "1")


async def test_public_websocket_route_needs_no_token(ws_gateway: Gateway) -> None:
    async with ws_gateway.client.ws_connect("/ws-open", headers={"X-User-Id": "666"}) as ws:
        hello = await ws.receive_json(timeout=5)
        assert hello["user_id"] is None  # forged identity stripped


async def test_upstream_refusing_the_handshake_is_502(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(routes=[route("/aaa", "public")])
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await gw.client.ws_connect("/aaa")  # the demo upstream's /aaa is plain HTTP
    assert info.value.status == 502


async def test_query_token_is_never_logged(
    ws_gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    token = await access_token(ws_gateway)
    with caplog.at_level(logging.DEBUG):
        async with ws_gateway.client.ws_connect(f"/ws?access_token={token}") as ws:
            await ws.receive_json(timeout=5)
    assert all(token not in record.getMessage() for record in caplog.records)


# --- sockets closed with their session -------------------------------------------------------

POLL = 0.5  # sessions.revocation_poll in these tests


@pytest.fixture
async def watched(start_gateway: GatewayFactory) -> Gateway:
    gw: Gateway = await start_gateway(
        routes=WS_ROUTES, sessions={"revocation_poll": f"{POLL}s", "reuse_grace": 0}, demo_user=True
    )
    return gw


async def open_socket(gw: Gateway, token: str) -> aiohttp.ClientWebSocketResponse:
    ws = await gw.client.ws_connect("/ws", protocols=("bearer", token))
    assert (await ws.receive_json(timeout=5))["user_id"] == "1"  # the demo's hello
    return ws


async def closed_by_gateway(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, str, float]:
    """The close frame's code and reason, and how long after the call it arrived."""
    start = time.perf_counter()
    while True:
        message = await ws.receive(timeout=10)
        if message.type is WSMsgType.CLOSE:
            return message.data, message.extra or "", time.perf_counter() - start
        assert message.type in (WSMsgType.TEXT, WSMsgType.BINARY), message


async def closes_counted(gw: Gateway, reason: str) -> float:
    text = await (await gw.client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(f'gateway_websocket_closes_total{{reason="{reason}"}}'):
            return float(line.split()[-1])
    return 0.0


async def test_logout_closes_the_socket_with_4401(watched: Gateway) -> None:
    pair = await watched.login()
    ws = await open_socket(watched, pair["access_token"])
    start = time.perf_counter()
    logout = await watched.client.post(
        "/user/logout", json={"refresh_token": pair["refresh_token"]}
    )
    assert logout.status == 200
    code, reason, _ = await closed_by_gateway(ws)
    elapsed = time.perf_counter() - start
    assert (code, reason) == (4401, "session revoked")
    # Revoked in this process: effective at once, seen by the next check (POLL / 2).
    assert elapsed < POLL + 1.0, elapsed
    logging.getLogger(__name__).warning("logout to close: %.3f s", elapsed)
    assert await closes_counted(watched, "revoked") == 1


async def test_reuse_detection_closes_the_sessions_sockets(watched: Gateway) -> None:
    pair = await watched.login()
    ws = await open_socket(watched, pair["access_token"])
    assert (await watched.refresh(pair)).status == 200
    reuse = await watched.refresh(pair)  # the retired token again: the family is revoked
    assert reuse.status == 401
    code, reason, elapsed = await closed_by_gateway(ws)
    assert (code, reason) == (4401, "session revoked")
    assert elapsed < POLL + 1.0, elapsed


async def test_a_user_disabled_elsewhere_loses_the_socket_within_the_revocation_poll(
    watched: Gateway,
) -> None:
    pair = await watched.login()
    ws = await open_socket(watched, pair["access_token"])
    user = await watched.app[STORE].get_user_by_name("guang")
    assert user is not None
    # As `gateway user disable` does from another process: this process learns it by polling.
    start = time.perf_counter()
    await watched.app[STORE].set_disabled("guang", True)
    await end_user_sessions(watched.app[STORE], user.id, "disabled", watched.clock())
    code, reason, _ = await closed_by_gateway(ws)
    elapsed = time.perf_counter() - start
    assert (code, reason) == (4401, "session revoked")
    assert elapsed < POLL + POLL / 2 + 1.0, elapsed  # the poll, one check, one query
    logging.getLogger(__name__).warning("revocation elsewhere to close: %.3f s", elapsed)


async def test_an_expired_access_token_closes_its_socket(watched: Gateway) -> None:
    ws = await open_socket(watched, (await watched.login())["access_token"])
    watched.clock.advance(1800 + 30 + 1)  # past expiry and leeway
    code, reason, elapsed = await closed_by_gateway(ws)
    assert (code, reason) == (4401, "access token expired")
    assert elapsed < 2.0
    assert await closes_counted(watched, "expired") == 1


async def test_in_band_reauthentication_keeps_the_socket_past_the_first_token(
    watched: Gateway,
) -> None:
    pair = await watched.login()
    ws = await open_socket(watched, pair["access_token"])
    watched.clock.advance(1000)
    fresh = await (await watched.refresh(pair)).json()
    await ws.send_json({"type": "gateway.reauthenticate", "access_token": fresh["access_token"]})
    watched.clock.advance(1000)  # the first token has expired, the fresh one has not
    await asyncio.sleep(POLL)  # a check or two
    await ws.send_str("still here")
    # The reauthentication message was the gateway's: the echo upstream never saw it.
    assert await ws.receive_str(timeout=5) == "still here"
    watched.clock.advance(1000)  # now the fresh one has expired too
    assert (await closed_by_gateway(ws))[:2] == (4401, "access token expired")


@pytest.mark.parametrize("token", ["not-a-token", "other-user"])
async def test_reauthentication_with_a_bad_token_closes_the_socket(
    watched: Gateway, token: str
) -> None:
    ws = await open_socket(watched, (await watched.login())["access_token"])
    if token == "other-user":
        await watched.add_user("mallory", "mallory-pw")
        token = (await watched.login("mallory", "mallory-pw"))["access_token"]
    await ws.send_json({"type": "gateway.reauthenticate", "access_token": token})
    assert (await closed_by_gateway(ws))[:2] == (4401, "reauthentication failed")


async def test_reauthentication_must_still_hold_the_routes_role(
    start_gateway: GatewayFactory,
) -> None:
    # A role taken away applies at the next refresh: the fresh token must not keep a socket
    # open on a route that asks for the role, as if the socket had been authorized with it.
    gw: Gateway = await start_gateway(
        routes=[route("/ws-admin", roles=["admin"], strip_prefix="/ws-admin", add_prefix="/ws")],
        sessions={"revocation_poll": f"{POLL}s"},
    )
    user = await gw.add_user()
    await gw.app[STORE].set_roles(user.id, ("admin",))
    pair = await gw.login()
    ws = await gw.client.ws_connect("/ws-admin", protocols=("bearer", pair["access_token"]))
    try:
        assert (await ws.receive_json(timeout=5))["user_id"] == "1"
        await gw.app[STORE].set_roles(user.id, ())
        fresh = await (await gw.refresh(pair)).json()
        await ws.send_json(
            {"type": "gateway.reauthenticate", "access_token": fresh["access_token"]}
        )
        assert (await closed_by_gateway(ws))[:2] == (4401, "reauthentication failed")
    finally:
        await ws.close()


async def test_sockets_close_at_the_maximum_lifetime(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(
        routes=[route("/ws-open", "public", strip_prefix="/ws-open", add_prefix="/ws")],
        websocket={"max_lifetime": "1h"},
    )
    ws = await gw.client.ws_connect("/ws-open")
    await ws.receive_json(timeout=5)
    gw.clock.advance(1800)
    await ws.send_str("half way")
    assert await ws.receive_str(timeout=5) == "half way"
    gw.clock.advance(1801)
    assert (await closed_by_gateway(ws))[:2] == (1008, "socket lifetime exceeded")
    assert await closes_counted(gw, "lifetime") == 1
