"""HTTP/1.1 framing of upstream responses, against raw-socket upstreams that write exactly the
bytes each test gives them and record what reached them on which connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway import create_app
from tests.support.gateways import make_config, route

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
# Serves one connection: given the upstream (whose read_request records each request), the
# connection's number (1, 2, ...) and its streams.
Script = Callable[["RawUpstream", int, Reader, Writer], Awaitable[None]]


class RawUpstream:
    """An upstream on a real port whose connections are served by a test's script."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        # (connection number, request line) of every request head that arrived.
        self.requests: list[tuple[int, str]] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def read_request(self, number: int, reader: asyncio.StreamReader) -> bytes:
        """One request head (and its Content-Length body); b"" at EOF."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return b""
        self.requests.append((number, head.split(b"\r\n", 1)[0].decode()))
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":", 1)[1]))
        return head

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(self, self.connections, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


StartRaw = Callable[[Script], Awaitable[tuple[TestClient[Any, Any], RawUpstream]]]


@pytest.fixture
async def raw_gateway(
    aiohttp_client: Callable[..., Any], tmp_path: Path
) -> AsyncIterator[StartRaw]:
    upstreams: list[RawUpstream] = []

    async def start(script: Script) -> tuple[TestClient[Any, Any], RawUpstream]:
        upstream = RawUpstream(script)
        upstreams.append(upstream)
        port = await upstream.start()
        config = make_config(
            database_url=f"sqlite:///{tmp_path / 'gateway.db'}",
            upstream_url=f"http://127.0.0.1:{port}",
            upstream={"timeout": "2s"},
            routes=[route("/raw/**", "public")],
        )
        client: TestClient[Any, Any] = await aiohttp_client(create_app(config))
        return client, upstream

    yield start
    for upstream in upstreams:
        await upstream.close()


def answer_each(response: bytes) -> Script:
    """A keep-alive upstream that answers every request on a connection with `response`."""

    async def script(upstream: RawUpstream, number: int, reader: Reader, writer: Writer) -> None:
        while await upstream.read_request(number, reader):
            writer.write(response)
            await writer.drain()

    return script


def answer_once(response: bytes) -> Script:
    """An upstream that answers the first request of each connection with `response`, then
    closes the connection."""

    async def script(upstream: RawUpstream, number: int, reader: Reader, writer: Writer) -> None:
        await upstream.read_request(number, reader)
        writer.write(response)
        await writer.drain()

    return script


async def test_informational_responses_before_the_final_one_are_skipped(
    raw_gateway: StartRaw,
) -> None:
    client, _ = await raw_gateway(
        answer_each(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
        ),
    )
    resp = await client.get("/raw/x")
    assert (resp.status, await resp.text()) == (200, "final")
    assert "Link" not in resp.headers


async def test_hop_by_hop_response_headers_are_dropped_in_every_spelling(
    raw_gateway: StartRaw,
) -> None:
    client, _ = await raw_gateway(
        answer_each(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
            b"Transfer_Encoding: chunked\r\nKeep_Alive: timeout=600\r\n"
            b"Proxy_Authenticate: Basic\r\nX_Request_ID: forged\r\n"
            b"Connection: X_Secret\r\nX-Secret: 1\r\nX-Kept: yes\r\n\r\nfinal"
        ),
    )
    resp = await client.get("/raw/x")
    assert (resp.status, await resp.text()) == (200, "final")
    names = [name.lower().replace("_", "-") for name in resp.headers]
    for dropped in ("transfer-encoding", "keep-alive", "proxy-authenticate", "x-secret"):
        assert dropped not in names, resp.headers
    assert names.count("x-request-id") == 1 and resp.headers["X-Request-ID"] != "forged"
    assert resp.headers["X-Kept"] == "yes"


async def test_a_head_response_has_no_body_and_keeps_the_connection(raw_gateway: StartRaw) -> None:
    client, upstream = await raw_gateway(
        answer_each(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    )
    for _ in range(3):
        resp = await client.head("/raw/x")
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "1000"
    assert upstream.connections == 1
    assert [n for n, _ in upstream.requests] == [1, 1, 1]


@pytest.mark.parametrize("status", [204, 304])
async def test_204_and_304_have_no_body_whatever_their_headers(
    raw_gateway: StartRaw, status: int
) -> None:
    client, upstream = await raw_gateway(
        answer_each(f"HTTP/1.1 {status} X\r\nContent-Length: 7\r\n\r\n".encode()),
    )
    for _ in range(2):
        resp = await client.get("/raw/x")
        assert (resp.status, await resp.read()) == (status, b"")
    assert upstream.connections == 1


async def test_a_chunked_body_with_trailers_is_relayed_without_them(raw_gateway: StartRaw) -> None:
    client, upstream = await raw_gateway(
        answer_each(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n"
        ),
    )
    for _ in range(2):
        resp = await client.get("/raw/x")
        assert (resp.status, await resp.text()) == (200, "hello world")
        assert "X-Checksum" not in resp.headers
    assert upstream.connections == 1


async def test_a_close_delimited_body_ends_at_eof_and_its_connection_is_not_reused(
    raw_gateway: StartRaw,
) -> None:
    client, upstream = await raw_gateway(
        answer_once(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the very end")
    )
    for _ in range(2):
        resp = await client.get("/raw/x")
        assert (resp.status, await resp.text()) == (200, "until the very end")
    assert upstream.connections == 2


async def test_an_early_answer_to_an_unfinished_body_closes_that_connection(
    raw_gateway: StartRaw,
) -> None:
    after_the_answer: list[bytes] = []

    async def script(upstream: RawUpstream, number: int, reader: Reader, writer: Writer) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        upstream.requests.append((number, head.split(b"\r\n", 1)[0].decode()))
        if head.startswith(b"POST"):
            # Refuse the upload at once, reading none of it, and offer to keep the connection;
            # then keep everything that still arrives until the gateway hangs up.
            writer.write(b"HTTP/1.1 413 Too Big\r\nContent-Length: 4\r\n\r\nnope")
            await writer.drain()
            rest = b""
            while chunk := await asyncio.wait_for(reader.read(1 << 20), 5):
                rest += chunk
            after_the_answer.append(rest)
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    client, upstream = await raw_gateway(script)

    async def slow_body() -> Any:
        for _ in range(20):
            yield b"x" * 65536
            await asyncio.sleep(0.01)

    resp = await client.post("/raw/upload", data=slow_body())
    assert (resp.status, await resp.text()) == (413, "nope")
    resp = await client.get("/raw/after")
    assert (resp.status, await resp.text()) == (200, "ok")
    # The connection of the refused upload was closed, never reused: the GET went elsewhere.
    assert [n for n, _ in upstream.requests] == [1, 2]
    assert len(after_the_answer) == 1 and b"GET" not in after_the_answer[0]


def closes_when_reused() -> Script:
    """Answers the first request of each connection, then reads the next and hangs up."""

    async def script(upstream: RawUpstream, number: int, reader: Reader, writer: Writer) -> None:
        await upstream.read_request(number, reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        await writer.drain()
        await upstream.read_request(number, reader)

    return script


async def test_a_get_on_a_connection_closed_as_it_is_reused_is_retried_on_a_fresh_one(
    raw_gateway: StartRaw,
) -> None:
    client, upstream = await raw_gateway(closes_when_reused())
    assert (await (await client.get("/raw/1")).text()) == "first"
    resp = await client.get("/raw/2")
    assert (resp.status, await resp.text()) == (200, "first")
    assert [n for n, _ in upstream.requests] == [1, 1, 2]


async def test_a_post_that_was_sent_is_not_retried_when_the_connection_closes(
    raw_gateway: StartRaw,
) -> None:
    client, upstream = await raw_gateway(closes_when_reused())
    assert (await client.get("/raw/1")).status == 200
    resp = await client.post("/raw/2", data=b"payload")
    assert resp.status == 502
    assert (await resp.json())["message"] == "Upstream 'demo' failed to answer"
    assert [n for n, _ in upstream.requests] == [1, 1]


@pytest.mark.parametrize(
    "response",
    [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n"
        ),
        b"HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=[
        "length-and-chunked",
        "bad-length",
        "two-lengths",
        "bad-chunk-size",
        "unasked-101",
        "garbage",
    ],
)
async def test_an_ambiguous_or_broken_response_is_a_502_and_its_connection_is_dropped(
    raw_gateway: StartRaw, response: bytes
) -> None:
    client, upstream = await raw_gateway(answer_each(response))
    for _ in range(2):
        resp = await client.get("/raw/x")
        assert resp.status == 502
        assert (await resp.json())["message"] == "Upstream 'demo' failed to answer"
    assert upstream.connections == 2


_STOLEN = b"HTTP/1.1 201 Created\r\nX-Stolen: yes\r\nContent-Length: 6\r\n\r\nstolen"


async def test_a_second_response_in_the_same_read_is_never_relayed(raw_gateway: StartRaw) -> None:
    client, upstream = await raw_gateway(
        answer_each(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nmine" + _STOLEN)
    )
    for _ in range(3):
        resp = await client.get("/raw/x")
        assert (resp.status, await resp.text()) == (200, "mine")
        assert "X-Stolen" not in resp.headers
    assert upstream.connections == 3


async def test_bytes_on_an_idle_pooled_connection_never_reach_the_next_client(
    raw_gateway: StartRaw,
) -> None:
    async def script(upstream: RawUpstream, number: int, reader: Reader, writer: Writer) -> None:
        while await upstream.read_request(number, reader):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nmine")
            await writer.drain()
            await asyncio.sleep(0.05)
            # A second, unsolicited response: it would be the next client's answer.
            writer.write(_STOLEN)
            await writer.drain()

    client, upstream = await raw_gateway(script)
    answers = []
    for _ in range(3):
        resp = await client.get("/raw/x")
        answers.append(await resp.text())
        await asyncio.sleep(0.2)
    assert answers == ["mine", "mine", "mine"]
    assert upstream.connections == 3
