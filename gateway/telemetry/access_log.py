"""One access-log line per request: who, what route, what status, how long, for which user.
Never a query string (it may carry tokens), never a header value."""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..request_keys import CLIENT, REQUEST_ID, ROUTE_NAME, UPSTREAM_NAME, USER_ID
from .redaction import loggable_path

__all__ = ["AccessLogger"]


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if not self.logger.isEnabledFor(20):  # INFO; skip all formatting when access logs are off
            return
        client = request.get(CLIENT) or request.remote or "-"
        path = loggable_path(request)
        duration_ms = round(time * 1000, 2)
        self.logger.info(
            "%s %s %s %d %.1fms",
            client,
            request.method,
            path,
            response.status,
            duration_ms,
            extra={
                "request_id": request.get(REQUEST_ID),
                "client": client,
                "method": request.method,
                "route": request.get(ROUTE_NAME),
                "path": path,
                "status": response.status,
                "upstream": request.get(UPSTREAM_NAME),
                "duration_ms": duration_ms,
                "user_id": request.get(USER_ID),
            },
        )
