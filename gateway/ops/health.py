"""Liveness and readiness: cheap, never behind a token, never shadowed by routes."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..appkeys import RUNTIME, STORE
from ..errors import StorageUnavailable
from ..request_keys import ROUTE_NAME

__all__ = ["healthz", "readyz"]

_READY_CHECK_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    request[ROUTE_NAME] = "healthz"
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The config is loaded and the database answers: safe to send traffic here."""
    request[ROUTE_NAME] = "readyz"
    checks = {"config": f"{len(request.app[RUNTIME].current.config.routes)} routes"}
    try:
        await asyncio.wait_for(request.app[STORE].ping(), _READY_CHECK_TIMEOUT)
        checks["database"] = "ok"
        ready = True
    except (StorageUnavailable, TimeoutError):
        checks["database"] = "unavailable"
        ready = False
    return web.json_response(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
        headers=None if ready else {"Retry-After": "5"},
    )
