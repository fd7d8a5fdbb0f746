"""Slow clients are cut off by timeouts and cannot exhaust the gateway."""

from __future__ import annotations

import asyncio
import time

from tests.support.gateways import Gateway, GatewayFactory
from tests.support.wire import connect


async def stalled_after(
    start_gateway: GatewayFactory, sent: bytes, **server: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float]:
    """A connection to a gateway with `server` settings that sends `sent` and then nothing more;
    and when it stopped."""
    gw: Gateway = await start_gateway(server=server)
    reader, writer = await connect(gw.client.server)
    writer.write(sent)
    await writer.drain()
    return reader, writer, time.monotonic()


async def test_request_head_never_finished_is_closed(start_gateway: GatewayFactory) -> None:
    reader, writer, started = await stalled_after(
        start_gateway, b"GET /aaa HTTP/1.1\r\nHost: x\r\nX-Slow: ", idle_timeout="1s"
    )
    closed = await asyncio.wait_for(reader.read(), 10)
    assert closed == b""
    assert time.monotonic() - started < 3
    writer.close()


async def test_trickled_body_gets_408(start_gateway: GatewayFactory) -> None:
    reader, writer, started = await stalled_after(
        start_gateway,
        b"POST /echo/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
        client_body_timeout="1s",
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    body = await reader.readexactly(length)
    assert head.startswith(b"HTTP/1.1 408")
    assert b"Connection: close" in head  # the stalled body is abandoned with the connection
    assert b'"message": "The request body stalled for more than 1s"' in body
    assert time.monotonic() - started < 4
    writer.close()


async def test_slow_connections_do_not_starve_others(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(server={"idle_timeout": "5s"})
    stalled = []
    for _ in range(200):
        _, writer = await connect(gw.client.server)
        writer.write(b"GET /aaa HTTP/1.1\r\nHost: x\r\n")
        stalled.append(writer)
    started = time.monotonic()
    resp = await gw.client.get("/aaa")
    assert (resp.status, await resp.text()) == (200, "aaa")
    assert time.monotonic() - started < 2
    for writer in stalled:
        writer.close()
