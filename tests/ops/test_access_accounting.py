"""A real `gateway serve` process: every answered request has its access line on disk after
SIGTERM, and a client that goes away is a 499 (never a 500, never an upstream error) that says
how far its request had got."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.request_keys import MID_RESPONSE, UPSTREAM_WAIT
from tests.ops.test_operations import sample, serve
from tests.support.gateways import route
from tests.support.processes import Processes


class SlowUpstream:
    """/wait sleeps before it answers; /drip sends its head and a first chunk, then sleeps."""

    def __init__(self) -> None:
        self.arrived: asyncio.Queue[str] = asyncio.Queue()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/wait", self.wait)
        app.router.add_get("/drip", self.drip)
        app.router.add_get("/firehose", self.firehose)
        app.router.add_get("/{tail:.*}", self.fast)
        return app

    async def wait(self, request: web.Request) -> web.Response:
        await self.arrived.put(request.path)
        await asyncio.sleep(5)
        return web.Response(text="late")

    async def drip(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first chunk\n")
        await self.arrived.put(request.path)
        await asyncio.sleep(5)
        await response.write(b"too late\n")
        return response

    async def firehose(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await self.arrived.put(request.path)
        for _ in range(2000):
            await response.write(b"x" * 65536)
        return response

    async def fast(self, request: web.Request) -> web.Response:
        return web.Response(text=request.path)


@pytest.fixture
async def slow_upstream(aiohttp_server: Callable[..., Any]) -> tuple[SlowUpstream, TestServer]:
    upstream = SlowUpstream()
    server: TestServer = await aiohttp_server(upstream.app())
    return upstream, server


def start(
    tmp_path: Path, processes: Processes, upstream: TestServer, **extra: Any
) -> tuple[Any, str, int]:
    routes = [route("/**", "public", name="all")]
    proc, base = serve(tmp_path, processes, upstream, routes, **extra)
    return proc, base, int(base.rsplit(":", 1)[1])


@dataclass(frozen=True)
class Served:
    """`gateway serve` (one public route, `all`) in front of a SlowUpstream."""

    upstream: SlowUpstream
    proc: Any
    base: str
    port: int


@pytest.fixture
def served(
    tmp_path: Path, processes: Processes, slow_upstream: tuple[SlowUpstream, TestServer]
) -> Served:
    upstream, server = slow_upstream
    return Served(upstream, *start(tmp_path, processes, server))


async def stop(proc: Any, processes: Processes) -> list[dict[str, Any]]:
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0
    output = processes.output(proc)
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


async def go_away_when(served: Served, path: str, request_id: str) -> None:
    """Send a GET, wait until the upstream has it (and, for /drip, the head is sent), close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: gw\r\nX-Request-ID: {request_id}\r\n\r\n".encode())
    await writer.drain()
    assert await asyncio.wait_for(served.upstream.arrived.get(), 10) == path
    if path in ("/drip", "/firehose"):
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(
            b"HTTP/1.1 200"
        )
    writer.close()
    await writer.wait_closed()


async def metrics_text(base: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as resp:
        return await resp.text()


async def wait_for_sample(base: str, name: str, value: float, **labels: str) -> str:
    """The gateway notices a closed connection on its next turn of the loop: poll a little."""
    for _ in range(50):
        text = await metrics_text(base)
        if sample(text, name, **labels) == value:
            return text
        await asyncio.sleep(0.1)
    return text


async def test_a_client_gone_is_a_499_with_its_access_line_never_a_500(
    served: Served, processes: Processes
) -> None:
    await go_away_when(served, "/wait", "gone-waiting")
    await go_away_when(served, "/drip", "gone-mid-body")

    text = await wait_for_sample(
        served.base, "gateway_requests_total", 2, route="all", status="499"
    )
    assert sample(text, "gateway_requests_total", route="all", method="GET", status="499") == 2
    assert sample(text, "gateway_requests_total", status="500") == 0
    assert "gateway_upstream_errors_total{" not in text
    assert sample(text, "gateway_requests_in_flight") == 1  # this scrape
    assert sample(text, "gateway_request_duration_seconds_count", route="all") == 2

    lines = await stop(served.proc, processes)
    waiting = [e for e in lines if e.get("request_id") == "gone-waiting"]
    mid_body = [e for e in lines if e.get("request_id") == "gone-mid-body"]
    assert len(waiting) == 1 and len(mid_body) == 1  # one line each: not none, not two
    for entry, path in ((waiting[0], "/wait"), (mid_body[0], "/drip")):
        assert (entry["status"], entry["route"], entry["path"]) == (499, "all", path)
        assert entry["upstream"] == "demo" and entry["logger"] == "aiohttp.access"
        assert entry["message"].endswith(f"aborted={entry['aborted']}")
    assert mid_body[0]["aborted"] == MID_RESPONSE
    assert waiting[0]["aborted"] in ("before_upstream", UPSTREAM_WAIT)
    assert not any(e["level"] == "error" for e in lines), [e["message"] for e in lines]


async def test_a_client_gone_while_the_upstream_thinks_is_logged_as_upstream_wait(
    served: Served, processes: Processes
) -> None:
    await go_away_when(served, "/wait", "gone-waiting")
    await wait_for_sample(served.base, "gateway_requests_total", 1, route="all", status="499")
    [entry] = [
        e for e in await stop(served.proc, processes) if e.get("request_id") == "gone-waiting"
    ]
    assert entry["aborted"] == UPSTREAM_WAIT


async def test_every_answered_request_is_logged_before_the_process_exits(
    served: Served, processes: Processes
) -> None:
    count = 400
    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> int:
            async with session.get(
                f"{served.base}/burst/{i}?token=not-for-logs",
                headers={"X-Request-ID": f"burst-{i}"},
            ) as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(one(i) for i in range(count)))
    assert statuses == [200] * count
    lines = await stop(served.proc, processes)  # SIGTERM at once: lines still buffered must get out
    logged = sorted(e["request_id"] for e in lines if e.get("request_id", "").startswith("burst-"))
    assert logged == sorted(f"burst-{i}" for i in range(count))
    assert not any("not-for-logs" in json.dumps(e) for e in lines)


async def test_the_access_log_can_be_switched_off(
    tmp_path: Path, processes: Processes, slow_upstream: tuple[SlowUpstream, TestServer]
) -> None:
    _, server = slow_upstream
    proc, base, _ = start(tmp_path, processes, server, logging={"access_log": False})
    async with aiohttp.ClientSession() as session, session.get(f"{base}/quiet") as resp:
        assert resp.status == 200
    lines = await stop(proc, processes)
    assert lines and not any(e["logger"] == "aiohttp.access" for e in lines)


async def test_a_client_gone_while_the_body_streams_is_never_an_upstream_error(
    served: Served, processes: Processes
) -> None:
    for i in range(3):  # the gateway is writing when it finds the client gone
        await go_away_when(served, "/firehose", f"gone-{i}")
    text = await wait_for_sample(
        served.base, "gateway_requests_total", 3, route="all", status="499"
    )
    lines = await stop(served.proc, processes)
    assert sample(text, "gateway_requests_total", route="all", status="499") == 3
    assert "gateway_upstream_errors_total{" not in text
    gone = [e for e in lines if e.get("request_id", "").startswith("gone-")]
    assert [(e["status"], e["aborted"]) for e in gone] == [(499, MID_RESPONSE)] * 3
    assert not any(e["level"] in ("warning", "error") for e in lines)
