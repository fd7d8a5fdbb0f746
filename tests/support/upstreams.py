"""Upstreams the tests put behind the gateway to see what reaches them."""

from __future__ import annotations

from aiohttp import web


class RecordingUpstream:
    """An upstream that answers every request and remembers what reached it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, list[tuple[str, str]]]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.seen.append((request.method, request.raw_path, list(request.headers.items())))
        return web.json_response({"reached": request.raw_path})

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.seen]
