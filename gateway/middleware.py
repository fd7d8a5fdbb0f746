"""The one place errors become responses: JSON bodies in the shape existing clients parse; and
where every request is counted and logged, a client that went away included."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .edge import EdgePolicy
from .errors import GatewayError, rendered_error
from .telemetry.accounting import CLIENT_CLOSED_REQUEST, RequestAccounting, how_far
from .telemetry.redaction import loggable_path

__all__ = ["gateway_middleware"]

log = logging.getLogger(__name__)


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=rendered_error(status, message),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="utf-8",
    )


def error_response(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer for an error raised while handling `request`."""
    if isinstance(exc, GatewayError):
        response = json_error(exc.status, exc.message, exc.headers)
        if exc.closes_connection:
            response.force_close()
        return response
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        # aiohttp's own (e.g. a body over client_max_size): same JSON shape as ours.
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return json_error(exc.status, exc.reason, headers)
    # Logged without the query string: it may hold a token.
    log.error("unhandled error for %s %s", request.method, loggable_path(request), exc_info=exc)
    return json_error(500, "Internal gateway error")


def gateway_middleware(edge: EdgePolicy, accounting: RequestAccounting) -> Middleware:
    """The one middleware every request passes: metrics and the access log around everything,
    the edge checks before routing, and every error turned into the JSON shape clients parse.
    (One layer instead of three: each aiohttp middleware layer costs on every request.)

    The access line is written here, not by aiohttp's access logger, because aiohttp writes
    none for a handler that was cancelled (handler_cancellation: the client went away)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = accounting.begin(request)
        status = 500
        aborted: str | None = None
        try:
            gone = False
            try:
                response = edge.admit(request) or await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400:
                    status = exc.status
                    raise
                response = error_response(request, exc)
            except ConnectionResetError:
                # Writing to the client failed; aiohttp's attempt to send this fails quietly.
                gone, response = True, web.Response(status=CLIENT_CLOSED_REQUEST)
            except Exception as exc:
                response = error_response(request, exc)
            status = response.status
            # Gone while its answer was still being made or sent (a WebSocket's end is not).
            if gone or (request.transport is None and status != 101):
                status, aborted = (
                    CLIENT_CLOSED_REQUEST,
                    how_far(request, request.writer.output_size),
                )
            return response
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client's connection is lost.
            status, aborted = CLIENT_CLOSED_REQUEST, how_far(request, request.writer.output_size)
            raise
        finally:
            accounting.end(request, status, started, aborted)

    return middleware
