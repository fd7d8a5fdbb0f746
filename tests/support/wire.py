"""Talking HTTP at the byte level or without a client library's help."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import BaseTestServer
from multidict import CIMultiDict


async def connect(server: BaseTestServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare TCP connection to a test server, for writing requests byte by byte."""
    return await asyncio.open_connection(str(server.host), int(server.port or 0))


async def raw_http(
    host: str, port: int, request_target: str, *, method: str = "GET", headers: str = ""
) -> tuple[int, bytes]:
    """Send a request line as written (no client-side normalization); return status and body."""

    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"{method} {request_target} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}"
            "Connection: close\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http to localhost
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def raw_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """A GET that returns status, headers and body without raising on 4xx/5xx."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - localhost
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:  # noqa: S310
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@dataclass(frozen=True)
class WireResponse:
    """One response as read off a connection."""

    status: int
    headers: CIMultiDict[str]
    body: bytes


async def read_response(reader: asyncio.StreamReader, *, method: str = "GET") -> WireResponse:
    """The next response on a connection (interim 1xx ones skipped), its body framed by
    Content-Length or chunked encoding, or absent as after HEAD, 204 and 304. Each read waits
    up to 10 seconds."""
    timeout = 10
    while True:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        if status >= 200 or status == 101:
            break
    headers: CIMultiDict[str] = CIMultiDict(line.partition(": ")[::2] for line in lines)
    if method == "HEAD" or status in (101, 204, 304):
        return WireResponse(status, headers, b"")
    if headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = b""
        while size := int((await asyncio.wait_for(reader.readline(), timeout)).strip(), 16):
            body += await asyncio.wait_for(reader.readexactly(size + 2), timeout)
            body = body[:-2]
        await asyncio.wait_for(reader.readline(), timeout)
        return WireResponse(status, headers, body)
    length = int(headers.get("Content-Length", "0"))
    return WireResponse(
        status, headers, await asyncio.wait_for(reader.readexactly(length), timeout)
    )


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def connection(server: BaseTestServer) -> AsyncIterator[Streams]:
    """A bare TCP connection to a test server, closed at the end of the block."""
    reader, writer = await connect(server)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):  # the gateway may have reset it first
            await writer.wait_closed()
