"""Relaying an established WebSocket pair: messages both ways, close codes preserved."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import WSMsgType, web

__all__ = ["relay"]

# Codes that may not be sent in a close frame (RFC 6455 §7.4.1): report a normal closure instead.
_UNSENDABLE = frozenset({1005, 1006, 1015})
AnyWebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


async def relay(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Pump messages until either side closes; then close the other with the same code."""
    tasks = [
        asyncio.create_task(_pump(client, upstream)),
        asyncio.create_task(_pump(upstream, client)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, ConnectionError):
                await task
        for ws in (client, upstream):
            if not ws.closed:
                with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                    await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)


async def _pump(source: AnyWebSocket, sink: AnyWebSocket) -> None:
    while True:
        message = await source.receive()
        if message.type is WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type is WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        elif message.type is WSMsgType.CLOSE:
            code = message.data if isinstance(message.data, int) else 1000
            code = 1000 if code in _UNSENDABLE else code
            reason = (message.extra or "").encode()
            # Pass the close on, then answer the side that sent it.
            await sink.close(code=code, message=reason)
            await source.close(code=code, message=reason)
            return
        elif message.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return
