"""A straightforward aiohttp + PyJWT proxy: what someone would write in an afternoon.

    JWT_SECRET=... .venv/bin/python bench/naive_proxy.py --port 8002 \
        --upstream http://127.0.0.1:3000 --issuer auth-gateway --audience auth-gateway

Every request: `jwt.decode` of the Bearer token (401 without a valid one), then the request is sent
upstream on one `ClientSession` kept for the life of the app and the answer streamed back. No token
cache, no prepared header sets, no lean client: the reference the gateway's hot path is measured
against. The secret comes from the environment so it never shows in `ps`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import jwt
from aiohttp import web
from harness import serve_app
from multidict import CIMultiDict

# RFC 9110 7.6.1: meaningful for one connection only, never forwarded. Host is the upstream's.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)


@dataclass(frozen=True)
class Settings:
    upstream: str
    secret: str
    issuer: str
    audience: str


SETTINGS = web.AppKey("settings", Settings)
SESSION = web.AppKey("session", aiohttp.ClientSession)


async def upstream_session(app: web.Application) -> AsyncIterator[None]:
    # auto_decompress=False: the client gets the upstream's bytes and Content-Encoding unchanged.
    timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_read=30)
    async with aiohttp.ClientSession(auto_decompress=False, timeout=timeout) as session:
        app[SESSION] = session
        yield


def unauthorized() -> web.Response:
    return web.Response(status=401, headers={"WWW-Authenticate": 'Bearer realm="naive"'})


async def proxy(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return unauthorized()
    try:
        claims = jwt.decode(
            token,
            settings.secret,
            algorithms=["HS256"],
            audience=settings.audience,
            issuer=settings.issuer,
        )
    except jwt.InvalidTokenError:
        return unauthorized()

    headers = CIMultiDict(
        (name, value) for name, value in request.headers.items() if name.lower() not in HOP_BY_HOP
    )
    headers["X-User-Id"] = str(claims.get("sub", ""))
    async with request.app[SESSION].request(
        request.method,
        settings.upstream + request.rel_url.raw_path_qs,
        headers=headers,
        data=request.content if request.body_exists else None,
        allow_redirects=False,
    ) as upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in HOP_BY_HOP:
                response.headers.add(name, value)
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(64 * 1024):
            await response.write(chunk)
        await response.write_eof()
    return response


def create_app(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app.cleanup_ctx.append(upstream_session)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:3000")
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--audience", required=True)
    args = parser.parse_args()
    secret = os.environ.get("JWT_SECRET", "")
    if not secret:
        raise SystemExit("set JWT_SECRET to the HS256 secret the tokens are signed with")
    settings = Settings(args.upstream.rstrip("/"), secret, args.issuer, args.audience)
    serve_app(create_app(settings), args.port)


if __name__ == "__main__":
    main()
