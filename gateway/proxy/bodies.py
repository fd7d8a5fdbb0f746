"""A client's request body on its way upstream: held to the route's size limit (413) and to the
body timeout (408), re-framed in chunks when it came chunked, written with back-pressure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from ..errors import GatewayError, PayloadTooLarge, RequestTimeout
from .http1 import ConnectionLost, UpstreamConnection, UpstreamProtocolError, UpstreamTimeout

__all__ = ["ClientBody", "send_body"]

_LAST_CHUNK = b"0\r\n\r\n"


class ClientBody:
    """Streams a request body upstream, stopping it at the route's size limit (413) and when
    the client stalls for longer than the body timeout (408)."""

    def __init__(self, limit: int, timeout: float) -> None:
        self.limit = limit
        self.timeout = timeout
        self.failure: GatewayError | None = None

    def too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"Request body is larger than {self.limit} bytes")

    async def stream(self, request: web.Request) -> AsyncIterator[bytes]:
        received = 0
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    chunk = await request.content.readany()
            except TimeoutError:
                self.failure = RequestTimeout(
                    f"The request body stalled for more than {self.timeout:g}s"
                )
                raise self.failure from None
            if not chunk:
                return
            received += len(chunk)
            if self.limit and received > self.limit:
                self.failure = self.too_large()
                raise self.failure
            yield chunk


async def send_body(
    connection: UpstreamConnection, request: web.Request, body: ClientBody, chunked: bool
) -> None:
    """Stream the client's body upstream with back-pressure; a client-side failure (too large,
    stalled) ends the exchange with that error."""
    try:
        async for piece in body.stream(request):
            connection.write_body(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            await connection.drain()
        if chunked:
            connection.write_body(_LAST_CHUNK)
        connection.body_sent()
    except GatewayError as failure:
        connection.abort(failure)
    except (ConnectionLost, UpstreamTimeout, UpstreamProtocolError, ConnectionError):
        pass  # the upstream side failed: the exchange reports it
