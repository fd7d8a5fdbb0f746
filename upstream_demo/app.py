"""A tiny backend standing for the user's own services. It trusts its headers, as real ones do."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from importlib import resources
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_log import AccessLogger

from .assertion import AssertionVerifier

__all__ = ["create_upstream_app"]

ASSERTION_HEADER = "X-Gateway-Assertion"
VERIFIER = web.AppKey("assertion_verifier", AssertionVerifier)


async def aaa(request: web.Request) -> web.Response:
    return web.Response(text="aaa")


async def bbb(request: web.Request) -> web.Response:
    return web.Response(text="bbb")


async def whoami(request: web.Request) -> web.Response:
    """The identity headers as received (every header named X-User-*), and whether the signed
    assertion verified (when the app was given a verifier)."""
    identity = {
        name.lower(): request.headers.getall(name)
        for name in dict.fromkeys(request.headers)
        if name.lower().startswith("x-user-")
    }
    return web.json_response(
        {
            "user_id": request.headers.get("X-User-Id"),
            "username": request.headers.get("X-User-Name"),
            "identity_headers": identity,
            "assertion": await _checked_assertion(request),
        }
    )


async def _checked_assertion(request: web.Request) -> dict[str, Any] | None:
    """{"verified": true, "claims": ...} or {"verified": false, "reason": ...}; None when this
    upstream checks no assertion."""
    verifier = request.app.get(VERIFIER)
    if verifier is None:
        return None
    token = request.headers.get(ASSERTION_HEADER)
    if token is None:
        return {"verified": False, "reason": f"no {ASSERTION_HEADER} header"}
    try:
        claims = await verifier.verify(token)
    except jwt.PyJWTError as exc:
        return {"verified": False, "reason": f"{type(exc).__name__}: {exc}"}
    except aiohttp.ClientError as exc:
        return {"verified": False, "reason": f"cannot fetch the JWKS: {exc}"}
    return {"verified": True, "claims": claims}


async def echo(request: web.Request) -> web.Response:
    """Exactly what arrived: method, raw path and query, every header, and the body's digest."""
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        length += len(chunk)
    raw_path, _, raw_query = request.raw_path.partition("?")
    return web.json_response(
        {
            "method": request.method,
            "path": raw_path,
            "query": raw_query,
            "headers": [[name, value] for name, value in request.headers.items()],
            "body_length": length,
            "body_sha256": digest.hexdigest(),
        }
    )


async def websocket_echo(request: web.Request) -> web.WebSocketResponse:
    """Echoes text and binary messages; `close:<code>` closes with that code; offers the
    subprotocol `echo` when asked; its first message is the identity it was told."""
    ws = web.WebSocketResponse(protocols=("echo",))
    await ws.prepare(request)
    await ws.send_json(
        {"user_id": request.headers.get("X-User-Id"), "query": request.rel_url.raw_query_string}
    )
    async for message in ws:
        if message.type is web.WSMsgType.TEXT:
            if message.data.startswith("close:"):
                await ws.close(code=int(message.data[6:]), message=b"closed by upstream")
                break
            await ws.send_str(message.data)
        elif message.type is web.WSMsgType.BINARY:
            await ws.send_bytes(message.data)
    return ws


_DEMO_PAGE = resources.files("upstream_demo").joinpath("static/demo.html").read_bytes()


async def home(request: web.Request) -> web.Response:
    """`/` is where a newcomer looks first: send them to the demo page (relative, so through
    the gateway it stays on the gateway)."""
    raise web.HTTPFound("/demo")


async def demo_page(request: web.Request) -> web.Response:
    """The demo screen: log in, call /aaa and /bbb, spoil tokens, watch silent refreshes."""
    return web.Response(body=_DEMO_PAGE, content_type="text/html", charset="utf-8")


# Its own logger name, so that in `gateway demo` (one process, two servers) the upstream's access
# lines are told apart from the gateway's `aiohttp.access` lines.
ACCESS_LOGGER = "upstream_demo.access"
_ACCESS_LOG = logging.getLogger(ACCESS_LOGGER)


async def healthz(request: web.Request) -> web.Response:
    """For the gateway's active health checks (upstreams.NAME.health.path)."""
    return web.json_response({"status": "ok"})


def _served_by(name: str, delay: float) -> Middleware:
    """Every answer says which instance gave it (X-Served-By), after `delay` seconds: several
    instances behind one upstream, one of them slow, for tests and for people watching."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if delay:
            await asyncio.sleep(delay)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if name:
                exc.headers["X-Served-By"] = name
            raise
        if name and not response.prepared:
            response.headers["X-Served-By"] = name
        return response

    return middleware


def create_upstream_app(
    *,
    access_log: logging.Logger | None = _ACCESS_LOG,
    name: str = "",
    delay: float = 0.0,
    verifier: AssertionVerifier | None = None,
) -> web.Application:
    """The demo upstream; `access_log=None` silences its access log; `name` is sent back as
    X-Served-By; `delay` holds every answer back that many seconds; with `verifier`, /whoami
    says whether the gateway's signed assertion verified."""
    # /echo reports the body as it arrived on the wire, compressed or not. handler_args win
    # over the runner's arguments, so the access logger (and aiohttp's plain line format, not
    # the gateway's) holds wherever the app is served.
    app = web.Application(
        middlewares=[_served_by(name, delay)] if name or delay else [],
        handler_args={
            "auto_decompress": False,
            "access_log": access_log,
            "access_log_class": AccessLogger,
        },
    )
    if verifier is not None:
        app[VERIFIER] = verifier
    app.router.add_get("/", home)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/aaa", aaa)
    app.router.add_get("/bbb", bbb)
    app.router.add_get("/whoami", whoami)
    app.router.add_get("/ws", websocket_echo)
    app.router.add_get("/demo", demo_page)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    return app
