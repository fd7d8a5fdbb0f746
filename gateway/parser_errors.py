"""Requests aiohttp's parser refuses (a malformed request line or header, a line over the
parser's limit) never reach an app: aiohttp answers them itself, in text/plain, quoting the bad
input back, with a `Server` header naming the Python and aiohttp versions. Served through
`GatewayRunner`, they get what every other refusal gets: the JSON error shape, a bare `Server`,
`nosniff`, none of the input repeated, and the connection closed (aiohttp's parser state after a
refused head cannot be trusted)."""

from __future__ import annotations

from aiohttp import http_exceptions, web

from .edge import SERVER_NAME
from .errors import rendered_error

__all__ = ["GatewayRequestHandler", "GatewayRunner"]

# Most specific first: BadHttpMethod is a BadStatusLine.
_WHAT_WAS_REFUSED: tuple[tuple[type[Exception], str], ...] = (
    (http_exceptions.LineTooLong, "A request line or header is longer than the parser allows"),
    (http_exceptions.BadHttpMethod, "The request line does not start with an HTTP method"),
    (http_exceptions.BadStatusLine, "The request line is malformed"),
    (http_exceptions.InvalidURLError, "The request target is malformed"),
    (http_exceptions.InvalidHeader, "A request header is malformed"),
)


def refusal_message(status: int, exc: BaseException | None) -> str:
    """What a refused request is told; never its own bytes (they may hold a token)."""
    if status >= 500:
        return "Internal gateway error"
    for kind, message in _WHAT_WAS_REFUSED:
        if isinstance(exc, kind):
            return message
    return "The request line or a header is malformed"


class GatewayRequestHandler(web.RequestHandler):
    """aiohttp's protocol, answering what its parser refuses in the gateway's shape."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own first: it logs (through the redacting filter) and refuses to answer
        # twice when part of a response is already out.
        refused = super().handle_error(request, status, exc, message)
        answer = web.Response(
            body=rendered_error(refused.status, refusal_message(refused.status, exc)),
            status=refused.status,
            content_type="application/json",
            charset="utf-8",
            headers={"Server": SERVER_NAME, "X-Content-Type-Options": "nosniff"},
        )
        answer.force_close()
        return answer


class _Server(web.Server):
    """aiohttp's server for the same app, whose connections get `_RequestHandler`."""

    def __init__(self, around: web.Server) -> None:
        super().__init__(
            around.request_handler,
            request_factory=around.request_factory,
            handler_cancellation=around.handler_cancellation,
            loop=around._loop,
            **around._kwargs,
        )

    def __call__(self) -> web.RequestHandler:
        return GatewayRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """`web.AppRunner` whose connections answer parser refusals in the gateway's shape (with
    `server.front`, gateway.server runs gateway apps through the front instead, which hands
    its connections to the same handler)."""

    async def _make_server(self) -> web.Server:
        return _Server(await super()._make_server())
