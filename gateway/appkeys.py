"""Typed keys for the app-scoped resources (no module globals, no string keys)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .config import GatewayConfig
from .passwords import PasswordHasher
from .proxy import Proxy
from .revocation import RevocationView
from .routing import RouteTable
from .sessions import SessionService
from .storage import Store
from .tokens import TokenService

__all__ = [
    "BACKGROUND",
    "CONFIG",
    "PASSWORDS",
    "PROXY",
    "REVOCATIONS",
    "ROUTES",
    "SESSIONS",
    "STORE",
    "TOKENS",
]

CONFIG = web.AppKey("config", GatewayConfig)
ROUTES = web.AppKey("routes", RouteTable)
TOKENS = web.AppKey("tokens", TokenService)
PASSWORDS = web.AppKey("passwords", PasswordHasher)
STORE = web.AppKey("store", Store)
PROXY = web.AppKey("proxy", Proxy)
REVOCATIONS = web.AppKey("revocations", RevocationView)
SESSIONS = web.AppKey("sessions", SessionService)
# Background tasks the app owns: cancelled and awaited on cleanup.
BACKGROUND = web.AppKey("background", list[asyncio.Task[None]])
