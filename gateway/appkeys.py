"""Typed keys for the app-scoped resources (no module globals, no string keys)."""

from __future__ import annotations

from aiohttp import web

from .config import GatewayConfig
from .passwords import PasswordHasher
from .proxy import Proxy
from .routing import RouteTable
from .storage import UserStore
from .tokens import TokenService

__all__ = ["CONFIG", "PASSWORDS", "PROXY", "ROUTES", "STORE", "TOKENS"]

CONFIG = web.AppKey("config", GatewayConfig)
ROUTES = web.AppKey("routes", RouteTable)
TOKENS = web.AppKey("tokens", TokenService)
PASSWORDS = web.AppKey("passwords", PasswordHasher)
STORE = web.AppKey("store", UserStore)
PROXY = web.AppKey("proxy", Proxy)
