"""What SIGTERM's drain does to requests that still need to *read* from the client: an upload whose
body is still arriving, and an open WebSocket; and to requests arriving on a connection that was
open before SIGTERM. Found by the multi-host test's rolling restart.

aiohttp's shutdown (`AppRunner.cleanup` -> `Server.pre_shutdown` -> `RequestHandler.close()` on
every connection, busy ones included) makes `data_received` drop everything that arrives after
SIGTERM: the upload stalled until SHUTDOWN_TIMEOUT and got a 502, the WebSocket went silent. The
gateway now drains before that cleanup runs (gateway/draining.py).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import Popen

import aiohttp
import pytest

from tests.support.processes import (
    REPO,
    Processes,
    add_user_by_cli,
    free_port,
    start_gateway_process,
    wait_for_port,
)

SHUTDOWN_TIMEOUT = 3.0


@pytest.fixture
def gateway(tmp_path: Path, processes: Processes) -> tuple[Popen[bytes], str]:
    """A gateway process (SQLite) in front of the demo upstream, and its URL."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    upstream_port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'gw.db'}",
        "JWT_SECRET": secrets.token_urlsafe(48),
        "UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}",
        "GATEWAY_PORT": str(free_port()),
        "SHUTDOWN_TIMEOUT": f"{SHUTDOWN_TIMEOUT:g}s",
    }
    add_user_by_cli(tmp_path, env, "drain", "12345678")
    upstream = processes.start(
        "upstream", ["-m", "upstream_demo", "--port", str(upstream_port)], tmp_path, env
    )
    wait_for_port(upstream_port, upstream)
    return start_gateway_process(processes, tmp_path, env)


async def _token(http: aiohttp.ClientSession, base: str) -> str:
    body = {"username": "drain", "password": "12345678"}
    async with http.post(f"{base}/user/login", json=body) as resp:
        assert resp.status == 200
        token: str = (await resp.json())["access_token"]
    return token


async def test_sigterm_lets_an_upload_still_arriving_finish(
    gateway: tuple[Popen[bytes], str],
) -> None:
    proc, base = gateway

    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1024
            await asyncio.sleep(0.1)

    async with aiohttp.ClientSession() as http:
        upload = asyncio.create_task(http.post(f"{base}/echo/upload", data=trickle()))
        await asyncio.sleep(0.4)  # some of the body is through, the rest still to come
        proc.send_signal(signal.SIGTERM)
        async with await upload as resp:
            status, body = resp.status, await resp.json()
    assert (status, body.get("body_length")) == (200, 10240)
    assert await asyncio.to_thread(proc.wait, 15) == 0


@asynccontextmanager
async def _websocket_at_sigterm(
    proc: Popen[bytes], base: str
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A logged-in WebSocket, relaying, at the moment the gateway gets SIGTERM."""
    async with aiohttp.ClientSession() as http:
        token = await _token(http, base)
        async with http.ws_connect(
            f"{base}/ws", headers={"Authorization": f"Bearer {token}"}
        ) as ws:
            await ws.receive_json(timeout=5)
            proc.send_signal(signal.SIGTERM)
            yield ws


async def test_sigterm_keeps_relaying_an_open_websocket_or_closes_it_going_away(
    gateway: tuple[Popen[bytes], str],
) -> None:
    proc, base = gateway
    async with _websocket_at_sigterm(proc, base) as ws:
        await asyncio.sleep(0.3)
        await ws.send_str("after SIGTERM")
        started = time.monotonic()
        message = await ws.receive(timeout=SHUTDOWN_TIMEOUT + 5)
        waited = time.monotonic() - started
    # Either the relay goes on until the client is done, or the client is told to reconnect.
    relayed = message.type is aiohttp.WSMsgType.TEXT and message.data == "after SIGTERM"
    told = message.type is aiohttp.WSMsgType.CLOSE and message.data == 1001
    assert (relayed or told) and waited < 1.0, (message, waited)


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str
) -> tuple[bytes, dict[str, str], bytes]:
    """One GET on an open connection: its status, headers (lower-case names) and body."""
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines if line)
    }
    body = await reader.readexactly(int(headers["content-length"]))
    return status.split(" ")[1].encode(), headers, body


async def test_requests_arriving_while_draining_on_open_connections_are_answered(
    gateway: tuple[Popen[bytes], str],
) -> None:
    proc, base = gateway
    port = int(base.rsplit(":", 1)[1])

    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(15):  # keeps the drain going for 1.5 s
            yield b"x" * 1024
            await asyncio.sleep(0.1)

    first = await asyncio.open_connection("127.0.0.1", port)
    second = await asyncio.open_connection("127.0.0.1", port)
    for connection in (first, second):
        status, headers, _ = await _exchange(*connection, "/aaa")
        assert status == b"200" and headers.get("connection", "").lower() != "close"
    async with aiohttp.ClientSession() as http:
        upload = asyncio.create_task(http.post(f"{base}/echo/upload", data=trickle()))
        await asyncio.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        # Kept-alive connections opened before SIGTERM: answered, and told to go elsewhere.
        status, headers, body = await _exchange(*first, "/aaa")
        assert (status, headers["connection"].lower(), body) == (b"200", "close", b"aaa")
        status, headers, body = await _exchange(*second, "/readyz")
        assert (status, headers["connection"].lower()) == (b"503", "close")
        assert b'"draining"' in body
        for reader, _ in (first, second):
            assert await asyncio.wait_for(reader.read(), 5) == b""  # then closed
        # No new connections: the port no longer accepts.
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        async with await upload as resp:
            assert (resp.status, (await resp.json())["body_length"]) == (200, 15 * 1024)
    for _, writer in (first, second):
        writer.close()
        await writer.wait_closed()
    assert await asyncio.to_thread(proc.wait, 15) == 0


async def test_a_websocket_still_open_when_the_shutdown_timeout_is_up_is_told_going_away(
    gateway: tuple[Popen[bytes], str],
) -> None:
    proc, base = gateway
    async with _websocket_at_sigterm(proc, base) as ws:
        started = time.monotonic()
        message = await ws.receive(timeout=SHUTDOWN_TIMEOUT + 5)
        waited = time.monotonic() - started
    # Relayed through the drain, then closed properly rather than cut.
    assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1001)
    assert SHUTDOWN_TIMEOUT - 0.5 < waited < SHUTDOWN_TIMEOUT + 2
    assert await asyncio.to_thread(proc.wait, 10) == 0
