"""The front (gateway/front/) against hostile and picky clients, over real sockets: it must parse
every head it serves as aiohttp's parser would, answer pipelined requests in order whether it or
aiohttp (after the hand-over) answers them, never serve bytes of a body as a request, and keep
slow, greedy and vanishing clients within the bounds aiohttp keeps them in."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpRequestParser
from aiohttp.test_utils import TestServer

from gateway.front.heads import HeadParser, head_end
from gateway.front.server import FrontServer
from tests.ops.test_operations import serve
from tests.support.certificates import CertificateAuthority
from tests.support.gateways import Gateway, GatewayFactory, route
from tests.support.processes import Deployment, Processes
from tests.support.wire import WireResponse, connect, read_response

GET_AAA = b"GET /aaa HTTP/1.1\r\nHost: x\r\n\r\n"
ALL_PUBLIC = [route("/**", "public")]
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def connection(server: TestServer | Any) -> AsyncIterator[Streams]:
    reader, writer = await connect(server)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):  # the gateway may have reset it first
            await writer.wait_closed()


class Recorder:
    """An upstream that answers every request with its path and keeps what arrived."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []

    async def answer(self, request: web.Request) -> web.Response:
        kind = request.path.rsplit("/", 1)[-1]
        self.seen.append((request.method, request.path_qs, await request.read()))
        if kind == "204":
            return web.Response(status=204)
        if kind == "304":
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.Response(text=request.path_qs)


@pytest.fixture
async def recorded(gateway_before: GatewayFactory) -> tuple[Gateway, Recorder]:
    recorder = Recorder()
    gw: Gateway = await gateway_before({"/{tail:.*}": recorder.answer}, routes=ALL_PUBLIC)
    return gw, recorder


# Heads: the front parses what it serves exactly as aiohttp's parser does.


def aiohttp_parses(head: bytes) -> list[tuple[Any, ...]] | None:
    """The messages aiohttp's (C) request parser finds in `head`, or None if it refuses it."""

    class Protocol:
        def __getattr__(self, name: str) -> Callable[..., None]:
            return lambda *args, **kwargs: None

    loop = asyncio.new_event_loop()
    try:
        parser = HttpRequestParser(
            cast(BaseProtocol, Protocol()),
            loop,
            2**16,
            max_line_size=2**17,
            max_field_size=2**17,
            max_headers=256,
        )
        messages, _, _ = parser.feed_data(head)
    except Exception:
        return None
    finally:
        loop.close()
    return [summary(message) for message, _ in messages]


def summary(message: Any) -> tuple[Any, ...]:
    # Names compare case-insensitively: aiohttp spells the ones it knows its own way.
    headers = tuple((name.lower(), value) for name, value in message.headers.items())
    return (
        message.method,
        message.path,
        message.version,
        headers,
        message.raw_headers,
        message.should_close,
        str(message.url),
    )


def front_parses(head: bytes) -> tuple[Any, ...] | None:
    end = head_end(head)
    if end < 0:
        return None
    message = HeadParser(256, {}).parse(head[:end])
    return None if message is None else summary(message)


HOST = b"Host: a\r\n"
HEADS = {
    "plain": b"GET / HTTP/1.1\r\n" + HOST + b"\r\n",
    "no host": b"GET / HTTP/1.1\r\n\r\n",
    "two hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "two user agents": b"GET / HTTP/1.1\r\n" + HOST + b"User-Agent: a\r\nUser-Agent: b\r\n\r\n",
    "two content types": b"GET / HTTP/1.1\r\n"
    + HOST
    + b"Content-Type: a\r\nContent-Type: b\r\n\r\n",
    "two lengths of 0": b"GET / HTTP/1.1\r\n"
    + HOST
    + b"Content-Length: 0\r\nContent-Length: 0\r\n\r\n",
    "length 0, 0": b"GET / HTTP/1.1\r\n" + HOST + b"Content-Length: 0, 0\r\n\r\n",
    "length 0": b"GET / HTTP/1.1\r\n" + HOST + b"Content-Length: 0\r\n\r\n",
    "length +0": b"GET / HTTP/1.1\r\n" + HOST + b"Content-Length: +0\r\n\r\n",
    "trailing whitespace": b"GET / HTTP/1.1\r\nHost: a \t\r\nAuthorization: Bearer t  \r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\n" + HOST + b"X-A: 1\r\n 2\r\n\r\n",
    "bare LF": b"GET /a HTTP/1.1\nHost: a\n\nGET /b HTTP/1.1\r\nHost: b\r\n\r\n",
    "bare CR": b"GET /a HTTP/1.1\rHost: a\r\n\r\n",
    "leading CRLF": b"\r\nGET / HTTP/1.1\r\n" + HOST + b"\r\n",
    "underscore in a name": b"GET / HTTP/1.1\r\n" + HOST + b"X_User: 1\r\n\r\n",
    "NUL in a value": b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\x00b\r\n\r\n",
    "DEL in a value": b"GET / HTTP/1.1\r\n" + HOST + b"X-A: a\x7fb\r\n\r\n",
    "non-ASCII value": b"GET / HTTP/1.1\r\n" + HOST + b"X-A: \xc3\xa9\xff\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding : chunked\r\n\r\n",
    "old WebSocket key": b"GET / HTTP/1.1\r\n" + HOST + b"Sec-WebSocket-Key1: 1\r\n\r\n",
    "CL and TE": b"POST / HTTP/1.1\r\n"
    + HOST
    + b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
    "Connection close": b"GET / HTTP/1.1\r\n" + HOST + b"Connection: keep-alive, CLOSE\r\n\r\n",
    "HTTP/2.0": b"GET / HTTP/2.0\r\n" + HOST + b"\r\n",
    "double slash": b"GET //evil.example/x?a=%20 HTTP/1.1\r\n" + HOST + b"\r\n",
    "fragment": b"GET /a#b HTTP/1.1\r\n" + HOST + b"\r\n",
}


@pytest.mark.parametrize("head", HEADS.values(), ids=HEADS.keys())
def test_a_head_the_front_serves_is_the_message_aiohttp_would_parse(head: bytes) -> None:
    ours = front_parses(head)
    if ours is not None:  # otherwise aiohttp gets the bytes and answers as it always has
        assert aiohttp_parses(head) == [ours]


def test_random_heads_the_front_serves_are_the_messages_aiohttp_would_parse() -> None:
    pieces = [
        *(b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b",", b"/", b"?", b"#", b"%", b"0", b"1"),
        *(b"\x00", b"\x7f", b"\xff", b"a", b"X_Y", b"Host", b"Content-Length", b"Connection"),
        *(b"Transfer-Encoding", b"chunked", b"close", b"Upgrade", b"Expect", b"HTTP/1.0"),
        *(b"\r\n\r\n", b"\r\n ", b"Host: a\r\n", b"Content-Length: 0\r\n", b"User-Agent: u\r\n"),
    ]
    starts = [b"GET / HTTP/1.1\r\nHost: a\r\n", b"GET /x?y HTTP/1.1\r\n", b"HEAD / HTTP/1.1\r\n"]
    chosen = random.Random(20260515)
    served = 0
    for _ in range(20_000):
        head = chosen.choice(starts) + b"".join(chosen.choices(pieces, k=chosen.randint(0, 10)))
        head += b"\r\n\r\n"
        ours = front_parses(head)
        if ours is not None:
            served += 1
            assert aiohttp_parses(head[: head_end(head)]) == [ours], head
    assert served > 1000  # the corpus does reach the front


@pytest.mark.parametrize(
    "extra",
    [b"", b"Host: y\r\n", b"Content-Type: a\r\nContent-Type: b\r\n"],
    ids=["no host", "two hosts", "two content types"],
)
async def test_a_head_aiohttp_refuses_is_refused_through_the_front(
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


# Pipelining and framing: every request answered, in order, by whichever protocol has it.


async def test_pipelined_requests_the_front_and_aiohttp_answer_come_back_in_order(
    recorded: tuple[Gateway, Recorder],
) -> None:
    gw, upstream = recorded
    async with connection(gw.client.server) as (reader, writer):
        writer.write(
            b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
            b"POST /3 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"  # aiohttp's from here
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


async def test_head_204_304_and_connection_close_are_framed_as_aiohttp_frames_them(
    recorded: tuple[Gateway, Recorder],
) -> None:
    gw, _ = recorded
    async with connection(gw.client.server) as (reader, writer):
        writer.write(
            b"HEAD /page HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /204 HTTP/1.1\r\nHost: x\r\n\r\n"
            b'GET /304 HTTP/1.1\r\nHost: x\r\nIf-None-Match: "v1"\r\n\r\n'
            b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        head = await read_response(reader, method="HEAD")
        no_content, not_modified, last = [await read_response(reader) for _ in range(3)]
        rest = await asyncio.wait_for(reader.read(), 5)
    assert (head.status, head.headers["Content-Length"]) == (200, str(len("/page")))
    assert (no_content.status, not_modified.status) == (204, 304)
    assert "Content-Length" not in no_content.headers
    assert not_modified.headers["ETag"] == '"v1"'
    assert (last.status, last.body, last.headers["Connection"]) == (200, b"/after", "close")
    assert rest == b""  # nothing after the close: /never was not answered


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


class DiscardingTransport(asyncio.Transport):
    """A transport that takes whatever the front writes, for feeding it bytes directly."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 2)}.get(name, default)

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


async def test_a_head_trickled_in_tiny_pieces_costs_time_linear_in_its_size(
    gateway: Gateway,
) -> None:
    front = cast(FrontServer, gateway.client.server.runner.server)  # type: ignore[union-attr]
    protocol = front()
    protocol.connection_made(DiscardingTransport())
    head = b"GET /aaa HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (96 * 1024) + b"\r\n\r\n"
    started = time.thread_time()
    for at in range(0, len(head), 4):
        protocol.data_received(head[at : at + 4])
    spent = time.thread_time() - started
    protocol.connection_lost(None)
    # 25 thousand arrivals: tens of milliseconds when each looks at its own bytes; over a
    # second when each searches the whole head so far.
    assert spent < 0.25


# Shutdown, through a real `gateway serve`.


@pytest.fixture
async def slow_upstream(aiohttp_server: Callable[..., Any]) -> tuple[TestServer, asyncio.Event]:
    arrived = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.sleep(1.5)
        return web.Response(text="slow done")

    async def fast(request: web.Request) -> web.Response:
        return web.Response(text=request.path)

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/{tail:.*}", fast)
    server: TestServer = await aiohttp_server(app)
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


# TLS, through a real `gateway serve` (uvloop's TLS transport), before and after the hand-over.


@pytest.fixture
def tls_gateway(tmp_path: Path, processes: Processes) -> Iterator[tuple[int, ssl.SSLContext]]:
    ca = CertificateAuthority(tmp_path, "front")
    issued = ca.issue("gateway")
    deployment = Deployment.create(
        processes,
        tmp_path,
        database_url=f"sqlite:///{tmp_path / 'gw.db'}",
        TLS_CERT_FILE=str(issued.cert_file),
        TLS_KEY_FILE=str(issued.key_file),
    )
    deployment.add_user("tls", "12345678")
    deployment.start_upstream()
    deployment.start_gateway()
    yield int(deployment.env["GATEWAY_PORT"]), ca.client_context()


async def test_over_tls_one_connection_serves_the_front_then_aiohttp_then_a_websocket(
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
