"""Serving the browser module at /_gateway/client.js, so any app behind the gateway can load it."""

from __future__ import annotations

import hashlib
from importlib import resources

from aiohttp import web

from ..request_keys import ROUTE_NAME

__all__ = ["client_module_handler"]

_SOURCE = resources.files("gateway.ops").joinpath("static/gateway-client.js").read_bytes()
_ETAG = '"' + hashlib.sha256(_SOURCE).hexdigest()[:16] + '"'


async def client_module_handler(request: web.Request) -> web.Response:
    request[ROUTE_NAME] = "client_module"
    if request.headers.get("If-None-Match") == _ETAG:
        return web.Response(status=304, headers={"ETag": _ETAG})
    return web.Response(
        body=_SOURCE,
        content_type="text/javascript",
        charset="utf-8",
        headers={"ETag": _ETAG, "Cache-Control": "no-cache"},
    )
