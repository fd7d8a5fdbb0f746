"""Typed keys for the app-scoped resources (no module globals, no string keys)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .config import GatewayConfig
from .metrics import GatewayMetrics
from .passwords import PasswordHasher
from .rate_limit import LoginLimiter
from .revocation import RevocationView
from .runtime import RuntimeHolder
from .sessions import SessionService
from .storage import Store
from .tokens import TokenService

__all__ = [
    "BACKGROUND",
    "CONFIG",
    "LIMITER",
    "METRICS",
    "PASSWORDS",
    "REVOCATIONS",
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
REVOCATIONS = web.AppKey("revocations", RevocationView)
SESSIONS = web.AppKey("sessions", SessionService)
# Background tasks the app owns: cancelled and awaited on cleanup.
BACKGROUND = web.AppKey("background", list[asyncio.Task[None]])
