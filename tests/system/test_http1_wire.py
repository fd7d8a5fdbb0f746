"""HTTP/1.1 on the wire, against hostile and picky clients over real sockets: heads the parser
refuses are refused, pipelined requests (bodiless or not) are answered in order, bytes of a body
are never served as a request, responses are framed as HEAD, 204, 304 and `Connection: close`
require, and slow, greedy and vanishing clients stay within bounds. Written as a review of the
reverted HTTP/1.1 front (README, "Tried and reverted"): each case is one that front got wrong or
had to get right, so anything put in front of aiohttp's protocol again must pass them too."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.ops.test_operations import serve
from tests.support.certificates import CertificateAuthority
from tests.support.errors import error_body
from tests.support.gateways import Gateway, GatewayFactory, route
from tests.support.processes import Deployment, Processes
from tests.support.upstreams import Recorder, slow_path_app
from tests.support.wire import WireResponse, connection, read_response

GET_AAA = b"GET /aaa HTTP/1.1\r\nHost: x\r\n\r\n"
ALL_PUBLIC = [route("/**", "public")]


@pytest.fixture
async def recorded(gateway_before: GatewayFactory) -> tuple[Gateway, Recorder]:
    recorder = Recorder()
    gw: Gateway = await gateway_before({"/{tail:.*}": recorder.answer}, routes=ALL_PUBLIC)
    return gw, recorder


# Heads aiohttp's parser refuses are refused; what it strips is stripped.


@pytest.mark.parametrize(
    "extra",
    [b"", b"Host: y\r\n", b"Content-Type: a\r\nContent-Type: b\r\n"],
    ids=["no host", "two hosts", "two content types"],
)
async def test_a_head_without_one_host_or_with_two_of_a_singleton_header_is_400(
    recorded: tuple[Gateway, Recorder], extra: bytes
) -> None:
    gw, upstream = recorded
    host = b"" if extra == b"" else b"Host: x\r\n"
    async with connection(gw.client.server) as (reader, writer):
        writer.write(b"GET /refused HTTP/1.1\r\n" + host + extra + b"\r\n")
        refused = await read_response(reader)
    assert refused.status == 400
    assert upstream.seen == []


async def test_whitespace_after_a_header_value_is_not_part_of_it(gateway: Gateway) -> None:
    async with connection(gateway.client.server) as (reader, writer):
        writer.write(b"GET /aaa HTTP/1.1\r\nHost: x\r\nX-Request-ID: chosen-id \t \r\n\r\n")
        answered = await read_response(reader)
    # With the spaces the id would be invalid, and the gateway would make up its own.
    assert answered.headers["X-Request-ID"] == "chosen-id"


# Pipelining and framing: every request answered, in order, and only those.


async def test_pipelined_requests_with_and_without_bodies_come_back_in_order(
    recorded: tuple[Gateway, Recorder],
) -> None:
    gw, upstream = recorded
    async with connection(gw.client.server) as (reader, writer):
        writer.write(
            b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
            b"POST /3 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /4 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"PUT /5 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            b"GET /6 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answers = [await read_response(reader) for _ in range(6)]
    assert [(a.status, a.body) for a in answers] == [(200, b"/%d" % i) for i in range(1, 7)]
    assert [(method, path) for method, path, _ in upstream.seen] == [
        ("GET", "/1"),
        ("GET", "/2"),
        ("POST", "/3"),
        ("GET", "/4"),
        ("PUT", "/5"),
        ("GET", "/6"),
    ]
    assert [body for _, _, body in upstream.seen] == [b"", b"", b"hello", b"", b"abc", b""]


async def test_dozens_of_requests_in_one_write_are_all_answered_in_order(
    recorded: tuple[Gateway, Recorder],
) -> None:
    gw, upstream = recorded
    count = 64
    async with connection(gw.client.server) as (reader, writer):
        writer.write(b"".join(b"GET /p?%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(count)))
        answers = [await read_response(reader) for _ in range(count)]
    assert [a.body for a in answers] == [b"/p?%d" % i for i in range(count)]
    assert len(upstream.seen) == count


async def test_a_body_that_spells_a_request_is_never_served_as_one(
    recorded: tuple[Gateway, Recorder],
) -> None:
    gw, upstream = recorded
    inner = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    async with connection(gw.client.server) as (reader, writer):
        writer.write(
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /carrier HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(inner), inner)
            + b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answers = [await read_response(reader) for _ in range(3)]
        writer.write(
            b"POST /both HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n%s" % (len(inner) + 5, inner)
        )
        refused = await read_response(reader)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and the connection ends there
    assert [a.body for a in answers] == [b"/first", b"/carrier", b"/last"]
    assert refused.status == 400
    assert [path for _, path, _ in upstream.seen] == ["/first", "/carrier", "/last"]
    assert upstream.seen[1][2] == inner


async def test_a_head_written_one_byte_at_a_time_is_answered(
    recorded: tuple[Gateway, Recorder],
) -> None:
    gw, _ = recorded
    async with connection(gw.client.server) as (reader, writer):
        for byte in b"GET /slowly HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n" + GET_AAA:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0)
        answers = [await read_response(reader) for _ in range(2)]
    assert [a.body for a in answers] == [b"/slowly", b"/aaa"]


async def test_head_204_304_and_connection_close_are_framed_as_they_require(
    recorded: tuple[Gateway, Recorder],
) -> None:
    gw, _ = recorded
    async with connection(gw.client.server) as (reader, writer):
        writer.write(
            b"HEAD /page HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /204 HTTP/1.1\r\nHost: x\r\n\r\n"
            b'GET /304 HTTP/1.1\r\nHost: x\r\nIf-None-Match: "v1"\r\n\r\n'
            b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        head = await read_response(reader, method="HEAD")
        no_content, not_modified, last = [await read_response(reader) for _ in range(3)]
        rest = await asyncio.wait_for(reader.read(), 5)
    assert (head.status, head.headers["Content-Length"]) == (200, str(len("/page")))
    assert (no_content.status, not_modified.status) == (204, 304)
    assert "Content-Length" not in no_content.headers
    assert not_modified.headers["ETag"] == '"v1"'
    assert (last.status, last.body, last.headers["Connection"]) == (200, b"/after", "close")
    assert rest == b""


async def test_a_refused_head_request_gets_its_length_but_no_body(gateway: Gateway) -> None:
    # (A body after the head would be read as the next answer's status line.)
    async with connection(gateway.client.server) as (reader, writer):
        writer.write(
            b"HEAD /bbb HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /_gateway/auth HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bad\r\n\r\n"
            b"GET /aaa HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        refused = await read_response(reader, method="HEAD")
        decision = await read_response(reader, method="HEAD")
        after = await read_response(reader)
    missing = json.dumps(error_body(401, "Unauthorized", "Missing bearer token")).encode()
    assert (refused.status, refused.body) == (401, b"")
    assert refused.headers["Content-Length"] == str(len(missing))
    assert (decision.status, decision.body) == (403, b"")  # not a trusted proxy
    assert (after.status, after.body) == (200, b"aaa")


async def test_a_204_or_304_to_head_carries_no_content_length(
    gateway_before: GatewayFactory,
) -> None:
    async def bodiless(request: web.Request) -> web.Response:
        status = int(request.path.rsplit("/", 1)[1])
        return web.Response(status=status, headers={"Content-Length": "42"})

    gw: Gateway = await gateway_before({"/{tail:.*}": bodiless}, routes=ALL_PUBLIC)
    async with connection(gw.client.server) as (reader, writer):
        writer.write(
            b"HEAD /x/204 HTTP/1.1\r\nHost: x\r\n\r\nHEAD /x/304 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answers = [await read_response(reader, method="HEAD") for _ in range(2)]
    assert [a.status for a in answers] == [204, 304]
    assert ["Content-Length" in a.headers for a in answers] == [False, False]


@pytest.mark.parametrize("target", ["/aaa", "/bbb", "/nowhere"])
async def test_with_cors_on_every_answer_varies_on_origin(
    start_gateway: GatewayFactory, target: str
) -> None:
    gw: Gateway = await start_gateway(cors={"allowed_origins": ["https://app.example"]})
    async with connection(gw.client.server) as (reader, writer):
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = await read_response(reader)
    assert answer.headers.getall("Vary") == ["Origin"]


async def test_a_431_is_counted_as_unmatched_as_on_the_apps_path(gateway: Gateway) -> None:
    headers = "".join(f"X-Pad-{n}: {'a' * 4000}\r\n" for n in range(9))
    async with connection(gateway.client.server) as (reader, writer):
        writer.write(f"GET /aaa HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        answer = await read_response(reader)
    assert answer.status == 431
    metrics = await (await gateway.client.get("/metrics")).text()
    assert 'gateway_requests_total{method="GET",route="unmatched",status="431"} 1.0' in metrics


# Through the front (the default). aiohttp 3.14 alone (server.front: false) refuses the whole
# pipelined chunk when bytes follow a Connection: close request: the requests before it get
# one HTTP/1.0 400 instead of their answers.
async def test_requests_before_a_connection_close_are_answered_and_those_after_it_are_not(
    recorded: tuple[Gateway, Recorder],
) -> None:
    gw, upstream = recorded
    async with connection(gw.client.server) as (reader, writer):
        writer.write(
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /closing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        answers = [await read_response(reader) for _ in range(2)]
        rest = await asyncio.wait_for(reader.read(), 5)
    assert [(a.status, a.body) for a in answers] == [(200, b"/first"), (200, b"/closing")]
    assert rest == b""
    assert [path for _, path, _ in upstream.seen] == ["/first", "/closing"]


async def test_header_limits_are_answered_and_the_connection_goes_on_when_it_can(
    gateway: Gateway,
) -> None:
    limits = {
        # (extra headers, status, connection still usable)
        "101 headers": (b"".join(b"X-%d: 1\r\n" % i for i in range(100)), 431, True),
        "40 KiB": (b"X-Big: " + b"a" * 40_000 + b"\r\n", 431, True),
        "just under 128 KiB": (b"X-Big: " + b"a" * (127 * 1024) + b"\r\n", 431, True),
        "a line over 128 KiB": (b"X-Big: " + b"a" * (129 * 1024) + b"\r\n", 400, False),
        "257 headers": (b"".join(b"X-%d: 1\r\n" % i for i in range(256)), 400, False),
    }
    for name, (extra, status, usable) in limits.items():
        async with connection(gateway.client.server) as (reader, writer):
            writer.write(b"GET /aaa HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n" + GET_AAA)
            refused = await read_response(reader)
            assert refused.status == status, name
            if usable:
                assert (await read_response(reader)).body == b"aaa", name
            else:
                assert await asyncio.wait_for(reader.read(), 5) == b"", name


async def test_expect_on_a_protected_route_after_a_served_request_gets_401_first(
    gateway: Gateway,
) -> None:
    async with connection(gateway.client.server) as (reader, writer):
        writer.write(
            GET_AAA + b"POST /private/x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 5\r\n\r\n"
        )
        served = await read_response(reader)
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert served.body == b"aaa"
    assert first.startswith(b"HTTP/1.1 401"), first


# Slow, greedy and vanishing clients.


async def test_an_idle_connection_is_closed_after_the_idle_timeout(
    start_gateway: GatewayFactory,
) -> None:
    gw: Gateway = await start_gateway(server={"idle_timeout": "500ms"})
    async with connection(gw.client.server) as (reader, writer):
        writer.write(GET_AAA)
        assert (await read_response(reader)).body == b"aaa"
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 5) == b""
    assert time.monotonic() - started < 2


async def test_a_partial_head_after_a_response_is_closed_after_the_idle_timeout(
    start_gateway: GatewayFactory,
) -> None:
    gw: Gateway = await start_gateway(server={"idle_timeout": "500ms"})
    async with connection(gw.client.server) as (reader, writer):
        writer.write(GET_AAA + b"GET /aaa HTTP/1.1\r\nX-Never-Finished: ")
        assert (await read_response(reader)).body == b"aaa"
        started = time.monotonic()
        closed = await asyncio.wait_for(reader.read(), 5)
    assert closed == b""
    assert time.monotonic() - started < 2


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_a_pipelining_client_that_never_reads_cannot_make_the_gateway_buffer_unbounded(
    gateway: Gateway,
) -> None:
    server = gateway.client.server
    client = socket.create_connection((str(server.host), int(server.port or 0)))
    client.setblocking(False)
    burst = GET_AAA * 2048
    before = resident_bytes()
    grown = 0
    deadline = time.monotonic() + 4
    try:
        while time.monotonic() < deadline and grown < 256 * 1024 * 1024:
            try:
                client.send(burst)
            except BlockingIOError:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0)
            grown = resident_bytes() - before
    finally:
        client.close()
    # What aiohttp bounds it to, roughly: 256 KiB waiting, a transport's write buffer.
    assert grown < 64 * 1024 * 1024


# Shutdown, through a real `gateway serve`.


@pytest.fixture
async def slow_upstream(aiohttp_server: Callable[..., Any]) -> tuple[TestServer, asyncio.Event]:
    arrived = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.sleep(1.5)
        return web.Response(text="slow done")

    server: TestServer = await aiohttp_server(slow_path_app(slow))
    return server, arrived


async def test_sigterm_finishes_requests_in_flight_and_closes_idle_connections(
    tmp_path: Path, processes: Processes, slow_upstream: tuple[TestServer, asyncio.Event]
) -> None:
    upstream, arrived = slow_upstream
    proc, base = serve(tmp_path, processes, upstream, ALL_PUBLIC)  # shutdown_timeout: 10s
    port = int(base.rsplit(":", 1)[1])
    idle = await asyncio.open_connection("127.0.0.1", port)
    partial = await asyncio.open_connection("127.0.0.1", port)
    busy = await asyncio.open_connection("127.0.0.1", port)
    idle[1].write(GET_AAA)
    assert (await read_response(idle[0])).body == b"/aaa"
    partial[1].write(b"GET /aaa HTTP/1.1\r\nHost: x\r\n")
    busy[1].write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(arrived.wait(), 10)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    finished: WireResponse = await read_response(busy[0])
    ends = [await asyncio.wait_for(r.read(), 10) for r, _ in (idle, partial, busy)]
    assert await asyncio.to_thread(proc.wait, 10) == 0
    assert (finished.status, finished.body) == (200, b"slow done")
    assert finished.headers["Connection"] == "close"
    assert ends == [b"", b"", b""]
    assert time.monotonic() - started < 5  # not the 10s shutdown timeout
    for _, writer in (idle, partial, busy):
        writer.close()


# TLS, through a real `gateway serve` (uvloop's TLS transport).


@pytest.fixture
def tls_gateway(tmp_path: Path, processes: Processes) -> Iterator[tuple[int, ssl.SSLContext]]:
    ca = CertificateAuthority(tmp_path, "wire")
    deployment = Deployment.with_tls(processes, tmp_path, ca.issue("gateway"))
    deployment.add_user("tls", "12345678")
    deployment.start_upstream()
    deployment.start_gateway()
    yield int(deployment.env["GATEWAY_PORT"]), ca.client_context()


async def test_over_tls_one_connection_serves_bodiless_and_body_requests_then_a_websocket(
    tls_gateway: tuple[int, ssl.SSLContext],
) -> None:
    port, context = tls_gateway
    login = json.dumps({"username": "tls", "password": "12345678"}).encode()
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    try:
        writer.write(
            GET_AAA + b"POST /user/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(login), login)
        )
        served, logged_in = await read_response(reader), await read_response(reader)
        token = json.loads(logged_in.body)["access_token"]
        writer.write(
            f"GET /bbb HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        )
        protected = await read_response(reader)
    finally:
        writer.close()
    assert (served.status, served.body) == (200, b"aaa")
    assert logged_in.status == 200
    assert (protected.status, protected.body) == (200, b"bbb")
    connector = aiohttp.TCPConnector(ssl=context)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.ws_connect(
            f"https://localhost:{port}/ws", headers={"Authorization": f"Bearer {token}"}
        ) as ws,
    ):
        assert (await ws.receive_json(timeout=5))["user_id"] == "1"  # the upstream's hello
        await ws.send_str("over tls")
        assert (await ws.receive(timeout=5)).data == "over tls"
