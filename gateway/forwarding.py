"""The catch-all handler: normalize the path, pick the route, check the token, forward."""

from __future__ import annotations

from aiohttp import web

from .appkeys import PROXY, REVOCATIONS, ROUTES, TOKENS
from .authn import authenticate
from .config import AuthPolicy
from .paths import normalize_path

__all__ = ["forward"]


async def forward(request: web.Request) -> web.StreamResponse:
    path = normalize_path(request.raw_path.partition("?")[0])
    route = request.app[ROUTES].resolve(path, request.method)
    identity = None
    if route.auth is AuthPolicy.REQUIRED:
        identity = authenticate(request.headers, request.app[TOKENS], request.app[REVOCATIONS])
    return await request.app[PROXY].forward(request, route, path, identity)
