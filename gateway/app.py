"""create_app(config): wires the gateway together; resources open in cleanup_ctx, not here."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from . import forwarding, user_api
from .appkeys import CONFIG, PASSWORDS, PROXY, ROUTES, STORE, TOKENS
from .config import GatewayConfig
from .middleware import error_middleware
from .passwords import PasswordHasher
from .proxy import Proxy
from .routing import RouteTable
from .storage import create_store
from .tokens import TokenService

__all__ = ["create_app"]


def create_app(config: GatewayConfig, *, clock: Callable[[], float] = time.time) -> web.Application:
    """Build the gateway application for a validated config. `clock` is injectable for tests."""
    app = web.Application(middlewares=[error_middleware], handler_args={"max_field_size": 16384})
    app[CONFIG] = config
    app[ROUTES] = RouteTable(config.routes)
    app[TOKENS] = TokenService(config.tokens, clock=clock)
    app[PASSWORDS] = PasswordHasher(config.passwords)
    app[STORE] = create_store(config.database.url)
    app[PROXY] = Proxy(config.upstreams, config.identity_headers, config.server.trusted_proxies)
    app.cleanup_ctx.extend([_store, _passwords, _proxy])

    app.router.add_route("*", "/user/login", user_api.login)
    app.router.add_route("*", "/user/refresh", user_api.refresh)
    app.router.add_get("/.well-known/jwks.json", user_api.jwks)
    app.router.add_route("*", "/{tail:.*}", forwarding.forward)
    return app


async def _store(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    await store.open()
    try:
        await store.migrate()
        yield
    finally:
        await store.close()


async def _passwords(app: web.Application) -> AsyncIterator[None]:
    await app[PASSWORDS].start()
    yield
    await app[PASSWORDS].close()


async def _proxy(app: web.Application) -> AsyncIterator[None]:
    await app[PROXY].start()
    yield
    await app[PROXY].close()
