"""What the gateway learns about a request as it handles it, for metrics and the access log."""

from __future__ import annotations

from aiohttp import web

__all__ = ["CLIENT", "REQUEST_ID", "ROUTE_NAME", "STARTED", "UPSTREAM_NAME", "USER_ID"]

# time.perf_counter() when the gateway started handling the request.
STARTED = web.RequestKey("started", float)

REQUEST_ID = web.RequestKey("request_id", str)
# The client's address (behind trusted proxies, from X-Forwarded-For).
CLIENT = web.RequestKey("client", str)
# A route name, or the name of one of the gateway's own endpoints.
ROUTE_NAME = web.RequestKey("route_name", str)
UPSTREAM_NAME = web.RequestKey("upstream_name", str)
USER_ID = web.RequestKey("user_id", str)
