"""Access log lines without secrets: no query strings (they may carry tokens), no headers."""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .log_safety import loggable_path

__all__ = ["AccessLogger"]


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %d %.1fms",
            request.remote,
            request.method,
            loggable_path(request),
            response.status,
            time * 1000,
        )
