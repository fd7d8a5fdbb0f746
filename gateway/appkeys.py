"""Typed keys for the app-scoped resources (no module globals, no string keys)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .auth.audit import AuditTrail
from .auth.passwords import PasswordHasher
from .auth.rate_limits import LoginLimiter
from .auth.revocation import RevocationView
from .auth.sessions import SessionService
from .auth.tokens import TokenService
from .config import GatewayConfig
from .draining import Drain
from .front import Lane
from .proxy.route_limits import RouteLimiter
from .proxy.runtime import RuntimeHolder
from .proxy.websocket import SocketSessions
from .storage import Store
from .telemetry.metrics import GatewayMetrics

__all__ = [
    "AUDIT",
    "BACKGROUND",
    "CONFIG",
    "DRAIN",
    "LANE",
    "LIMITER",
    "METRICS",
    "PASSWORDS",
    "REVOCATIONS",
    "ROUTE_LIMITER",
    "RUNTIME",
    "SESSIONS",
    "STORE",
    "TOKENS",
]

CONFIG = web.AppKey("config", GatewayConfig)
TOKENS = web.AppKey("tokens", TokenService)
PASSWORDS = web.AppKey("passwords", PasswordHasher)
STORE = web.AppKey("store", Store)
RUNTIME = web.AppKey("runtime", RuntimeHolder)
METRICS = web.AppKey("metrics", GatewayMetrics)
LIMITER = web.AppKey("limiter", LoginLimiter)
ROUTE_LIMITER = web.AppKey("route_limiter", RouteLimiter)
REVOCATIONS = web.AppKey("revocations", RevocationView)
SESSIONS = web.AppKey("sessions", SessionService)
AUDIT = web.AppKey("audit", AuditTrail)
SOCKETS = web.AppKey("sockets", SocketSessions)
# Graceful shutdown: requests in flight, and whether the app is draining (server.py drains it).
DRAIN = web.AppKey("drain", Drain)
# What the front answers without the app's router, middleware and response objects.
LANE = web.AppKey("lane", Lane)
# Background tasks the app owns: cancelled and awaited on cleanup.
BACKGROUND = web.AppKey("background", list[asyncio.Task[None]])
