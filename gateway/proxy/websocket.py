"""Relaying an established WebSocket pair: messages both ways, close codes preserved; and closing
sockets whose session ended.

A socket opened with an access token lives no longer than what let it open (README
"WebSockets"). The gateway closes the client side with **4401** and a reason when the session is
revoked (logout, reuse detection, the user disabled or given a new password) or the access token
expires, and with **1008** when the socket reaches `websocket.max_lifetime`. A client keeps a
socket past its token's expiry by re-authenticating in band: the text message
``{"type": "gateway.reauthenticate", "access_token": "<a fresh access token>"}``, which the
gateway consumes (it never reaches the upstream); a token of another user, an invalid one, or
one without any of the roles the route asks for (a role taken away applies at the next refresh),
closes the socket with 4401.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

import aiohttp
from aiohttp import WSMsgType, web

from ..auth.revocation import RevocationView
from ..auth.tokens import Identity, TokenService
from ..errors import Unauthorized
from ..telemetry.metrics import GatewayMetrics

__all__ = ["SocketSessions", "relay"]

log = logging.getLogger(__name__)
# Codes that may not be sent in a close frame (RFC 6455 §7.4.1): report a normal closure instead.
_UNSENDABLE = frozenset({1005, 1006, 1015})
AnyWebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse
REAUTHENTICATE = "gateway.reauthenticate"
# Close codes of the gateway's own: 4401 (the 4000s are for applications) mirrors HTTP 401, so a
# client knows to get a fresh token and reconnect; 1008 is the standard policy violation.
UNAUTHORIZED_CLOSE = 4401
POLICY_CLOSE = 1008
# reason label -> (close code, close reason sent to the client)
_ENDINGS = {
    "revoked": (UNAUTHORIZED_CLOSE, "session revoked"),
    "expired": (UNAUTHORIZED_CLOSE, "access token expired"),
    "reauth_failed": (UNAUTHORIZED_CLOSE, "reauthentication failed"),
    "lifetime": (POLICY_CLOSE, "socket lifetime exceeded"),
}
# The longest in-band message the gateway inspects (an access token is well under this).
_MAX_REAUTH_MESSAGE = 16 * 1024


@dataclass(eq=False)
class _Socket:
    identity: Identity | None
    opened_at: float
    # The route's roles (one of them needed), which a fresh token must still hold.
    roles: frozenset[str] = frozenset()
    ended: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def end(self, reason: str) -> None:
        if not self.ended.done():
            self.ended.set_result(reason)


@dataclass(slots=True)
class SocketSessions:
    """The open WebSockets of this process, checked every `check_interval` against the
    revocations this process knows (reloaded every `sessions.revocation_poll`), their access
    token's expiry and the maximum lifetime."""

    tokens: TokenService
    revocations: RevocationView
    metrics: GatewayMetrics
    _: KW_ONLY
    max_lifetime: float
    leeway: float
    check_interval: float
    clock: Callable[[], float] = time.time
    _open: set[_Socket] = field(init=False, default_factory=set)

    async def run(self) -> None:
        """Check the open sockets forever (an app background task)."""
        while True:
            await asyncio.sleep(self.check_interval)
            self.check()

    def check(self) -> None:
        now = self.clock()
        for socket in self._open:
            reason = self._verdict(socket, now)
            if reason is not None:
                socket.end(reason)

    def _verdict(self, socket: _Socket, now: float) -> str | None:
        identity = socket.identity
        if identity is not None:
            if self.revocations.is_revoked(identity.session_id):
                return "revoked"
            if now >= identity.expires_at + self.leeway:
                return "expired"
        if self.max_lifetime and now >= socket.opened_at + self.max_lifetime:
            return "lifetime"
        return None

    async def relay(
        self,
        client: web.WebSocketResponse,
        upstream: aiohttp.ClientWebSocketResponse,
        identity: Identity | None,
        roles: frozenset[str] = frozenset(),
    ) -> None:
        """`relay`, closing both sides when the socket's session ends."""
        socket = _Socket(identity, self.clock(), roles)
        self._open.add(socket)
        try:
            reason = await relay(client, upstream, socket=socket, reauthenticate=self._reauth)
        finally:
            self._open.discard(socket)
        if reason is not None:
            self.metrics.websocket_closes.labels(reason).inc()
            log.info("websocket closed by the gateway: %s", reason)

    def _reauth(self, socket: _Socket, data: str) -> bool:
        """Handle an in-band reauthentication message; False when `data` is not one."""
        if socket.identity is None or len(data) > _MAX_REAUTH_MESSAGE or REAUTHENTICATE not in data:
            return False
        try:
            message = json.loads(data)
        except ValueError:
            return False
        if not isinstance(message, dict) or message.get("type") != REAUTHENTICATE:
            return False
        token = message.get("access_token")
        try:
            if not isinstance(token, str):
                raise Unauthorized("no access token", token_presented=True)
            fresh = self.tokens.verify_access(token)
        except Unauthorized:
            socket.end("reauth_failed")
            return True
        if (
            fresh.user_id != socket.identity.user_id
            or self.revocations.is_revoked(fresh.session_id)
            or (socket.roles and socket.roles.isdisjoint(fresh.roles))
        ):
            socket.end("reauth_failed")
        else:
            socket.identity = fresh
        return True


async def relay(
    client: web.WebSocketResponse,
    upstream: aiohttp.ClientWebSocketResponse,
    *,
    socket: _Socket | None = None,
    reauthenticate: Callable[[_Socket, str], bool] | None = None,
) -> str | None:
    """Pump messages until either side closes, then close the other with the same code; or
    until `socket` ends, then close both (returns why)."""
    consume: Callable[[str], bool] | None = None
    if socket is not None and reauthenticate is not None:
        watched, handler = socket, reauthenticate
        consume = lambda data: handler(watched, data)  # noqa: E731
    tasks: list[asyncio.Future[object]] = [
        asyncio.ensure_future(_pump(client, upstream, consume)),
        asyncio.ensure_future(_pump(upstream, client, None)),
    ]
    if socket is not None:
        tasks.append(socket.ended)  # type: ignore[arg-type]
    ended: str | None = None
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if socket is not None and socket.ended.done() and not socket.ended.cancelled():
            ended = socket.ended.result()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks[:2]:
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, ConnectionError):
                await task
        code, reason = _ENDINGS.get(ended or "", (aiohttp.WSCloseCode.GOING_AWAY, ""))
        for ws, ws_code in ((client, code), (upstream, aiohttp.WSCloseCode.GOING_AWAY)):
            if not ws.closed:
                with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                    await ws.close(code=ws_code, message=reason.encode())
    return ended


async def _pump(
    source: AnyWebSocket, sink: AnyWebSocket, consume: Callable[[str], bool] | None
) -> None:
    while True:
        message = await source.receive()
        if message.type is WSMsgType.TEXT:
            if consume is not None and consume(message.data):
                continue  # the gateway's own message: never relayed
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
