"""Route rate limits (`routes[].rate_limit`): each caller, by user id or client address, gets
`requests` per `per` on a route; beyond that, 429 with Retry-After and RateLimit-* headers,
before anything is forwarded. The buckets are GCRA (limits/gcra.py), in this process or shared
through Redis."""

from __future__ import annotations

import hashlib
import math

from aiohttp import web

from ..auth.tokens import Identity
from ..config import RouteConfig
from ..errors import TooManyRequests
from ..limits.gcra import GcraStore
from ..request_keys import CLIENT

__all__ = ["RouteLimiter"]


class RouteLimiter:
    """Checks a request against its route's rate limit, if the route has one."""

    def __init__(self, store: GcraStore) -> None:
        self._store = store
        # Per route name: the prefix of its keys (hashed: a name may hold any character).
        self._prefixes: dict[str, str] = {}

    async def open(self) -> None:
        await self._store.open()

    async def close(self) -> None:
        await self._store.close()

    async def check(
        self, request: web.Request, route: RouteConfig, identity: Identity | None
    ) -> None:
        """Count the request; raise TooManyRequests when it is over the limit."""
        limit = route.rate_limit
        if limit is None:
            return
        prefix = self._prefixes.get(route.name)
        if prefix is None:
            digest = hashlib.sha256(route.name.encode("utf-8", "surrogateescape")).hexdigest()
            prefix = self._prefixes[route.name] = f"gw:route:{digest[:24]}"
        if limit.by == "user" and identity is not None:
            key = f"{prefix}:u:{identity.user_id}"
        else:
            # Anonymous callers of a `by: user` route are counted by address.
            key = f"{prefix}:a:{request[CLIENT]}"
        decision = await self._store.take(key, limit.requests, limit.per)
        if not decision.allowed:
            raise TooManyRequests(
                decision.retry_after,
                what="requests to this route",
                headers={
                    "RateLimit-Limit": str(limit.requests),
                    "RateLimit-Remaining": "0",
                    "RateLimit-Reset": str(max(1, math.ceil(decision.reset_after))),
                    "RateLimit-Policy": f"{limit.requests};w={_window(limit.per)}",
                },
            )


def _window(per: float) -> str:
    """The window in whole seconds, as RateLimit-Policy writes it."""
    return str(max(1, round(per)))
