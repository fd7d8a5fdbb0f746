"""The front (gateway/front/) against hostile and picky clients, over real sockets: it must parse
every head it serves as aiohttp's parser would, answer pipelined requests in order whether it or
aiohttp (after the hand-over) answers them, never serve bytes of a body as a request, and keep
slow, greedy and vanishing clients within the bounds aiohttp keeps them in."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import random
import time
from collections.abc import Callable
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import HttpRequestParser

from gateway.appkeys import METRICS, RUNTIME
from gateway.front.heads import HeadParser, head_end
from gateway.front.server import FrontServer
from gateway.proxy.runtime import Runtime
from tests.support.gateways import Gateway, GatewayFactory

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
    loop = asyncio.new_event_loop()
    try:
        heads = HeadParser(BaseProtocol(loop), loop, max_field_size=2**17, max_headers=256)
        message = heads.parse(head[:end])
    finally:
        loop.close()
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


# Slow, greedy and vanishing clients.


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


async def test_a_reload_between_the_lanes_decision_and_its_exchange_uses_the_new_routes(
    gateway: Gateway,
) -> None:
    # The lane finds the route when the head arrives and sends it upstream in a task that runs
    # later: a reload in between must not send it on with the retired routes and pools.
    holder = gateway.app[RUNTIME]
    old = holder.current
    config = dataclasses.replace(
        old.config, routes=tuple(r for r in old.config.routes if r.pattern.text != "/aaa")
    )
    new = Runtime.build(config, gateway.app[METRICS])
    await new.proxy.start()
    front = cast(FrontServer, gateway.client.server.runner.server)  # type: ignore[union-attr]
    transport = RecordingTransport()
    protocol = front()
    protocol.connection_made(transport)
    protocol.data_received(b"GET /aaa HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.written == b""  # found, and waiting for its task
    holder.current, old.retired = new, True  # what reload does, before the task's first step
    await asyncio.wait_for(transport.answered.wait(), 5)
    assert transport.written.startswith(b"HTTP/1.1 404 "), transport.written
    assert old.in_flight == 0 and new.in_flight == 0
    holder.current, old.retired = old, False
    protocol.connection_lost(None)
    await new.proxy.close()


async def test_a_client_gone_before_its_task_ever_ran_is_logged_as_a_499_and_never_forwarded(
    gateway_before: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # A head and the client's reset can come in one read: the front has made the task that is
    # to answer the request (the lane's exchange, or the app), and the reset cancels it before
    # its first step, so none of its code ever runs. The request is still logged and counted.
    forwarded: list[str] = []

    async def upstream(request: web.Request) -> web.Response:
        forwarded.append(request.path)
        return web.Response(text="bbb")

    gw = await gateway_before({"/bbb": upstream})
    await gw.add_user()
    token = (await gw.login())["access_token"]
    front = cast(FrontServer, gw.client.server.runner.server)
    caplog.set_level(logging.INFO, "aiohttp.access")
    heads = {
        "/bbb": f"GET /bbb HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n",
        "/healthz": "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",  # the app's
    }
    for head in heads.values():
        protocol = front()
        protocol.connection_made(RecordingTransport())
        protocol.data_received(head.encode())
        protocol.connection_lost(ConnectionResetError())
    await asyncio.sleep(0.05)  # the cancelled tasks end
    gc.collect()  # a coroutine never awaited would warn now (an error, in this suite)
    lines = {
        record.path: record  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == "aiohttp.access" and record.path in heads  # type: ignore[attr-defined]
    }
    assert sorted(lines) == sorted(heads)
    for record in lines.values():
        assert (record.status, record.aborted) == (499, "before_upstream")  # type: ignore[attr-defined]
    assert all(record.request_id for record in lines.values())  # type: ignore[attr-defined]
    route = lines["/bbb"].route  # type: ignore[attr-defined]
    assert route == "/bbb GET,HEAD"
    assert forwarded == []
    requests = gw.app[METRICS].requests
    assert requests.labels(route, "GET", "499").value == 1


async def test_a_task_cancelled_before_its_first_step_leaves_no_work_never_awaited(
    gateway: Gateway,
) -> None:
    # The loop shutting down cancels every task, some before they ever ran: the work of the
    # request (the lane's or the app's) is made by the task itself, so none is left unawaited.
    front = cast(FrontServer, gateway.client.server.runner.server)  # type: ignore[union-attr]
    protocols = []
    before = asyncio.all_tasks()
    for head in (
        b"GET /aaa HTTP/1.1\r\nHost: x\r\n\r\n",  # proxied
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        protocol = front()
        protocol.connection_made(RecordingTransport())
        protocol.data_received(head)
        protocols.append(protocol)
    started = asyncio.all_tasks() - before
    assert len(started) == 2
    for task in started:
        task.cancel()
    await asyncio.sleep(0.05)
    assert all(task.cancelled() for task in started)
    gc.collect()  # a coroutine never awaited would warn now (an error, in this suite)
    # And the connections answer nothing now: shutdown closes them at once.
    assert all(protocol.close_idle() for protocol in protocols)


class RecordingTransport(DiscardingTransport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.answered = asyncio.Event()

    def write(self, data: Any) -> None:
        self.written += bytes(data)
        self.answered.set()


# Shutdown, through a real `gateway serve`.


# TLS, through a real `gateway serve` (uvloop's TLS transport), before and after the hand-over.


async def test_hundreds_of_mixed_requests_at_once_each_get_their_own_answer(
    gateway: Gateway,
) -> None:
    # Answered at once (401, 404, 405), through a task (proxied) and by the app (/healthz),
    # on the same paths and methods, with the route table remembering what it found: every
    # answer must be the one its own request asks for.
    pair = await gateway.login()
    token = {"Authorization": f"Bearer {pair['access_token']}"}
    kinds: list[tuple[str, str, dict[str, str], int]] = [
        ("GET", "/aaa", {}, 200),
        ("GET", "/bbb", {}, 401),
        ("GET", "/bbb", token, 200),
        ("POST", "/bbb", token, 405),
        ("GET", "/nowhere", token, 404),
        ("HEAD", "/aaa", {}, 200),
        ("GET", "/whoami", token, 200),
        ("GET", "/healthz", {}, 200),
    ]
    client = gateway.client

    async def one(index: int) -> tuple[int, int]:
        method, path, headers, expected = kinds[index % len(kinds)]
        async with client.request(method, path, headers=headers) as resp:
            await resp.read()
            return resp.status, expected

    results = await asyncio.gather(*(one(i) for i in range(400)))
    assert [status for status, _ in results] == [expected for _, expected in results]
