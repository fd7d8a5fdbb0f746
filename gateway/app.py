"""create_app(config): wires the gateway together; resources open in cleanup_ctx, not here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from .appkeys import (
    AUDIT,
    BACKGROUND,
    CONFIG,
    DRAIN,
    LANE,
    LIMITER,
    METRICS,
    PASSWORDS,
    REVOCATIONS,
    ROUTE_LIMITER,
    RUNTIME,
    SESSIONS,
    SOCKETS,
    STORE,
    TOKENS,
)
from .auth.account import AccountEndpoints
from .auth.assertions import assertion_signer
from .auth.audit import AuditTrail
from .auth.authenticator import Authenticator
from .auth.browser_endpoints import BrowserEndpoints
from .auth.browser_sessions import BrowserSessions
from .auth.callers import Callers
from .auth.cookies import SessionCookies
from .auth.endpoints import UserEndpoints
from .auth.origins import OriginPolicy
from .auth.pages import PageStyle
from .auth.passwords import PasswordHasher
from .auth.rate_limits import LoginLimiter, create_counters
from .auth.revocation import RevocationView
from .auth.sessions import SessionService, revocation_window
from .auth.tokens import TokenService
from .config import PARSER_FIELD_LIMIT, PARSER_MAX_HEADERS, GatewayConfig
from .config.endpoints import OWN_ENDPOINTS
from .config.tls import follow_reloads
from .draining import Drain
from .edge import EdgePolicy
from .errors import NotFound, StorageUnavailable
from .forward_auth import Decisions
from .lane import GatewayLane
from .limits.gcra import create_gcra
from .middleware import gateway_middleware
from .ops.browser_module import client_module_handler
from .ops.health import Health
from .ops.openapi import openapi_handler
from .proxy.handler import ProxyHandler, defer_continue
from .proxy.policy import RequestPolicy
from .proxy.route_limits import RouteLimiter
from .proxy.runtime import Runtime, RuntimeHolder
from .proxy.websocket import SocketSessions
from .request_keys import ROUTE_NAME
from .storage import create_store, open_store
from .telemetry.access_log import AccessLog
from .telemetry.accounting import RequestAccounting
from .telemetry.metrics import GatewayMetrics

__all__ = ["create_app", "create_metrics_app", "listening_tls", "reload_config"]

log = logging.getLogger(__name__)


def create_app(config: GatewayConfig, *, clock: Callable[[], float] = time.time) -> web.Application:
    """Build the gateway application for a validated config. `clock` is injectable for tests."""
    metrics = GatewayMetrics(config.metrics)
    drain = Drain()
    edge = EdgePolicy(config.server, config.cors, drain)
    access_log = AccessLog(enabled=config.logging.access_log)
    accounting = RequestAccounting(metrics, access_log, drain)
    app = web.Application(
        middlewares=[gateway_middleware(edge, accounting)],
        handler_args={
            # A client that goes away cancels its handler, and so the upstream request.
            "handler_cancellation": True,
            # A request head must arrive within this; idle connections close after it.
            "keepalive_timeout": config.server.idle_timeout,
            # Request bodies are forwarded as sent, compressed or not.
            "auto_decompress": False,
            # aiohttp's parser refuses past these; below them EdgePolicy answers 431 itself.
            "max_line_size": PARSER_FIELD_LIMIT,
            "max_field_size": PARSER_FIELD_LIMIT,
            "max_headers": PARSER_MAX_HEADERS,
        },
    )
    app.on_response_prepare.append(edge.on_prepare)
    store = create_store(config.database.url, timeout=config.database.timeout)
    tokens = TokenService(config.tokens, clock=clock)
    revocations = RevocationView(
        store,
        window=revocation_window(config.tokens, config.sessions),
        poll_interval=config.sessions.revocation_poll,
        clock=clock,
    )
    sessions = SessionService(store, tokens, revocations, config, clock=clock)
    passwords = PasswordHasher(config.passwords, max_wait=config.database.timeout)
    limiter = LoginLimiter(config.rate_limits, create_counters(config.rate_limits))
    # Route rate limits share the login limits' Redis, when there is one.
    route_limiter = RouteLimiter(create_gcra(config.rate_limits.redis_url))
    assertions = assertion_signer(config, clock=clock)
    runtime = RuntimeHolder(Runtime.build(config, metrics, assertions), metrics, assertions)
    app[CONFIG] = config
    app[METRICS] = metrics
    app[RUNTIME] = runtime
    app[STORE] = store
    app[TOKENS] = tokens
    app[REVOCATIONS] = revocations
    app[SESSIONS] = sessions
    app[PASSWORDS] = passwords
    app[LIMITER] = limiter
    app[ROUTE_LIMITER] = route_limiter
    audit = AuditTrail(store, metrics, clock=clock)
    app[AUDIT] = audit
    app[BACKGROUND] = []
    app[DRAIN] = drain
    # The access log first: it is flushed last, after the final requests and cleanup logs.
    app.cleanup_ctx.extend(
        [
            access_log.cleanup_ctx,
            _store,
            _passwords,
            _runtime,
            _limiter,
            _route_limiter,
            _background,
        ]
    )

    browser: BrowserSessions | None = None
    if config.browser.cookie_sessions:
        browser = _browser_sessions(
            app, config, tokens, revocations, sessions, metrics, audit, clock
        )
        edge.also_prepare(browser.write_cookies)
    account = AccountEndpoints(
        callers=Callers(tokens, revocations, browser), sessions=sessions, audit=audit
    )
    users = UserEndpoints(
        sessions=sessions,
        passwords=passwords,
        store=store,
        limiter=limiter,
        tokens=tokens,
        metrics=metrics,
        account=account,
        audit=audit,
    )
    health = Health(runtime, store, drain)
    handlers: dict[str, Handler] = {
        "login": users.login,
        "refresh": users.refresh,
        "logout": users.logout,
        "sessions": account.list_sessions,
        "session": account.end_session,
        "jwks": users.jwks,
        "healthz": health.healthz,
        "readyz": health.readyz,
        "metrics": metrics.handle,
        "openapi": openapi_handler,
        "client_module": client_module_handler,
        "login_page": _cookie_sessions_off,
    }
    if browser is not None:
        pages = BrowserEndpoints(
            users=users,
            browser=browser,
            tokens=tokens,
            metrics=metrics,
            style=PageStyle.build(config.browser, browser.origins.trusted),
        )
        handlers["login_page"], handlers["logout"] = pages.login, pages.logout
    # The one policy path, for proxied requests and forward-auth decisions alike.
    policy = RequestPolicy(Authenticator(tokens, revocations, metrics), browser)
    decisions = Decisions(runtime, policy, config, limiter=route_limiter, clock=clock)
    handlers["forward_auth"], handlers["ext_authz"] = decisions.auth, decisions.ext_authz
    app[LANE] = GatewayLane(
        edge=edge,
        accounting=accounting,
        runtime=runtime,
        policy=policy,
        limiter=route_limiter,
        decisions=decisions,
    )
    for endpoint in OWN_ENDPOINTS:
        if endpoint.name == "metrics" and not (config.metrics.enabled and not config.metrics.port):
            continue  # served on its own port, or not at all
        path = endpoint.path + r"/{tail:[\s\S]*}" if endpoint.prefix else endpoint.path
        app.router.add_route(endpoint.method, path, handlers[endpoint.name])
    sockets = SocketSessions(
        tokens,
        revocations,
        metrics,
        max_lifetime=config.websocket_max_lifetime,
        leeway=config.tokens.leeway,
        # A fraction of the revocation poll: a socket closes within the poll plus this.
        check_interval=min(0.5, config.sessions.revocation_poll / 2),
        clock=clock,
    )
    app[SOCKETS] = sockets
    proxy = ProxyHandler(runtime, policy, route_limiter, drain, sockets)
    # [\s\S]: a decoded newline must reach normalize_path (400), not fall out of routing.
    app.router.add_route("*", r"/{tail:[\s\S]*}", proxy.forward, expect_handler=defer_continue)
    return app


def _browser_sessions(
    app: web.Application,
    config: GatewayConfig,
    tokens: TokenService,
    revocations: RevocationView,
    sessions: SessionService,
    metrics: GatewayMetrics,
    audit: AuditTrail,
    clock: Callable[[], float],
) -> BrowserSessions:
    """Cookie sessions: built here, their refreshes in flight cancelled on cleanup, and how their
    cookies are secured logged at start (the edge writes their cookies on every response)."""
    trusted_proxies = config.server.trusted_proxies
    browser = BrowserSessions(
        config,
        cookies=SessionCookies(config.browser, trusted_proxies),
        origins=OriginPolicy(config.browser.trusted_origins, trusted_proxies),
        tokens=tokens,
        revocations=revocations,
        sessions=sessions,
        metrics=metrics,
        audit=audit,
        clock=clock,
    )

    async def started(app: web.Application) -> None:
        # With TLS on the gateway's port no request is plain HTTP, so every cookie is Secure.
        if config.browser.insecure_loopback and not config.server.tls.enabled:
            log.warning(
                "cookie sessions: plain-HTTP loopback requests get cookies WITHOUT Secure "
                "(browser.insecure_loopback); every other request gets __Host- Secure cookies"
            )
        else:
            log.info("cookie sessions: __Host- cookies, Secure, HttpOnly, SameSite=Lax")

    async def stopped(app: web.Application) -> None:
        await browser.close()

    app.on_startup.append(started)
    app.on_cleanup.append(stopped)
    return browser


async def _cookie_sessions_off(request: web.Request) -> web.Response:
    request[ROUTE_NAME] = "login_page"
    raise NotFound("There is no login page: cookie sessions are off (browser.cookie_sessions)")


def create_metrics_app(gateway: web.Application) -> web.Application:
    """A separate app serving only /metrics, for `metrics.port`."""
    app = web.Application()
    app.router.add_get("/metrics", gateway[METRICS].handle)
    return app


def listening_tls(app: web.Application) -> ssl.SSLContext | None:
    """The TLS context the gateway's port listens with (None: plain HTTP). Each new handshake
    uses the certificate the last reload read; connections already open keep theirs."""
    listening = app[CONFIG].server.tls.context
    if listening is not None:
        runtime = app[RUNTIME]
        follow_reloads(listening, lambda: runtime.current.config.server.tls.context)
    return listening


async def reload_config(app: web.Application, path: str) -> bool:
    """SIGHUP: apply the config file's routes and upstreams to new requests, and its TLS
    certificate to new connections."""
    config = app[CONFIG]
    reloaded = await app[RUNTIME].reload(path, drain_timeout=config.server.shutdown_timeout)
    tls = app[RUNTIME].current.config.server.tls
    if reloaded and tls.enabled and config.server.tls.enabled:
        log.info("TLS: new connections get the certificate %s", tls.certificate)
    return reloaded


async def _store(app: web.Application) -> AsyncIterator[None]:
    async with open_store(app[CONFIG].database, store=app[STORE]):
        yield


async def _passwords(app: web.Application) -> AsyncIterator[None]:
    await app[PASSWORDS].start()
    yield
    await app[PASSWORDS].close()


async def _runtime(app: web.Application) -> AsyncIterator[None]:
    await app[RUNTIME].current.proxy.start()
    yield
    await app[RUNTIME].close()


async def _limiter(app: web.Application) -> AsyncIterator[None]:
    await app[LIMITER].open()
    yield
    await app[LIMITER].close()


async def _route_limiter(app: web.Application) -> AsyncIterator[None]:
    await app[ROUTE_LIMITER].open()
    yield
    await app[ROUTE_LIMITER].close()


async def _background(app: web.Application) -> AsyncIterator[None]:
    # Know every revoked session before serving the first request.
    await app[REVOCATIONS].reload()
    tasks = app[BACKGROUND]
    tasks.append(asyncio.create_task(app[REVOCATIONS].run(), name="revocation-view"))
    tasks.append(asyncio.create_task(_prune_forever(app), name="session-pruning"))
    tasks.append(asyncio.create_task(app[AUDIT].run(), name="audit-writer"))
    tasks.append(asyncio.create_task(app[SOCKETS].run(), name="websocket-sessions"))
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    tasks.clear()
    await app[AUDIT].flush()  # the store closes after this


async def _prune_forever(app: web.Application) -> None:
    config = app[CONFIG]
    while True:
        await asyncio.sleep(config.sessions.prune_interval)
        try:
            pruned = await app[SESSIONS].prune()
        except StorageUnavailable:
            log.warning("session pruning skipped: database unavailable")
            continue
        if pruned:
            log.info("pruned %d expired or revoked sessions", pruned)
        try:
            pruned = await app[AUDIT].prune(config.audit.retention)
        except StorageUnavailable:
            continue
        if pruned:
            log.info("pruned %d audit events older than audit.retention", pruned)
