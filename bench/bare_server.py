"""The floor of anything aiohttp serves: one handler answering a fixed 200, nothing else.

    .venv/bin/python bench/bare_server.py --port 8001

Runs as the gateway runs (uvloop when installed, access log off), so the gateway's CPU per request
can be read against what aiohttp's server alone costs on this machine.
"""

from __future__ import annotations

import argparse

from aiohttp import web
from harness import serve_app


async def fixed(request: web.Request) -> web.Response:
    return web.Response(text="bbb")


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/bbb", fixed)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    serve_app(create_app(), parser.parse_args().port)


if __name__ == "__main__":
    main()
