"""WebSocket upgrades: authenticated at the handshake, relayed both ways, close codes kept."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from tests.support.gateways import Gateway, GatewayFactory, route


@pytest.fixture
async def ws_gateway(start_gateway: GatewayFactory) -> Gateway:
    gw: Gateway = await start_gateway(
        routes=[
            route("/ws"),
            route("/ws-open", "public", strip_prefix="/ws-open", add_prefix="/ws"),
        ]
    )
    await gw.add_user()
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
