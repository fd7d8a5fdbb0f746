"""What the gateway learns about a request as it handles it, for metrics and the access log."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from aiohttp import web

__all__ = [
    "BEFORE_UPSTREAM",
    "CLIENT",
    "MID_RESPONSE",
    "PROGRESS",
    "REQUEST_ID",
    "ROUTE_NAME",
    "STARTED",
    "UPSTREAM_NAME",
    "UPSTREAM_WAIT",
    "USER_ID",
    "learned",
    "noted",
]

# time.perf_counter() when the gateway started handling the request.
STARTED = web.RequestKey("started", float)

REQUEST_ID = web.RequestKey("request_id", str)
# The client's address (behind trusted proxies, from X-Forwarded-For).
CLIENT = web.RequestKey("client", str)
# A route name, or the name of one of the gateway's own endpoints.
ROUTE_NAME = web.RequestKey("route_name", str)
UPSTREAM_NAME = web.RequestKey("upstream_name", str)
USER_ID = web.RequestKey("user_id", str)

# How far a proxied request got, for the accounting of a client that goes away (status 499):
# absent means BEFORE_UPSTREAM; the proxy sets UPSTREAM_WAIT just before it sends the request
# upstream, and MID_RESPONSE once the response head is sent to the client (the middleware also
# sees that by itself: bytes were written to the client).
PROGRESS = web.RequestKey("progress", str)
BEFORE_UPSTREAM = "before_upstream"
UPSTREAM_WAIT = "upstream_wait"
MID_RESPONSE = "mid_response"


def learned(request: web.BaseRequest) -> Mapping[Any, Any]:
    """The request's keys as a plain mapping, for readers on the hot path: `request.get(KEY)`
    goes through `Mapping.get`, which raises and catches a KeyError for every absent key
    (about a microsecond each); the dict behind it answers in tens of nanoseconds."""
    state = getattr(request, "_state", None)
    return state if isinstance(state, dict) else request


def noted(request: web.BaseRequest) -> MutableMapping[Any, Any]:
    """The same for writers: `request[KEY] = value` goes through MutableMapping's Python code
    (a few tenths of a microsecond, several times per request)."""
    state = getattr(request, "_state", None)
    return state if isinstance(state, dict) else request
