"""The one place errors become responses: JSON bodies in the shape existing clients parse."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from .errors import GatewayError, error_body
from .log_safety import loggable_path

__all__ = ["error_middleware", "json_error"]

log = logging.getLogger(__name__)


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(status, message), status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        response = json_error(exc.status, exc.message, exc.headers)
        if exc.closes_connection:
            response.force_close()
        return response
    except web.HTTPException as exc:
        # aiohttp's own (e.g. a body over client_max_size): same JSON shape as ours.
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return json_error(exc.status, exc.reason, headers)
    except Exception:
        # Logged without the query string: it may hold a token.
        log.exception("unhandled error for %s %s", request.method, loggable_path(request))
        return json_error(500, "Internal gateway error")
