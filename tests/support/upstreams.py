"""Upstreams the tests put behind the gateway to see what reaches them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from .processes import Processes, free_port, wait_for_port


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


def slow_path_app(slow: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.Application:
    """An upstream whose /slow is `slow` and whose every other path answers with the path."""

    async def fast(request: web.Request) -> web.Response:
        return web.Response(text=request.path)

    app = web.Application()
    app.router.add_get("/slow", slow)
    app.router.add_get("/{tail:.*}", fast)
    return app


class DemoTargets:
    """upstream_demo processes, each named (X-Served-By) on its own port: the targets of one
    upstream. Stopped with the test's other processes."""

    def __init__(self, processes: Processes, cwd: Path) -> None:
        self._processes = processes
        self._cwd = cwd
        self.ports: dict[str, int] = {}
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *, delay: float = 0.0) -> str:
        """Start (or restart, on its old port) the target `name`; its URL."""
        port = self.ports.setdefault(name, free_port())
        args = ["-m", "upstream_demo", "--port", str(port), "--name", name]
        if delay:
            args += ["--delay", str(delay)]
        proc = self._processes.start(f"upstream-{name}", args, self._cwd, dict(os.environ))
        wait_for_port(port, proc)
        self.running[name] = proc
        return self.url(name)

    def kill(self, name: str) -> None:
        """SIGKILL: connections in flight are reset, new ones refused."""
        proc = self.running.pop(name)
        proc.kill()
        proc.wait()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports.setdefault(name, free_port())}"


class Recorder:
    """An upstream that answers every request with its path and keeps what arrived."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []

    async def answer(self, request: web.Request) -> web.Response:
        kind = request.path.rsplit("/", 1)[-1]
        self.seen.append((request.method, request.path_qs, await request.read()))
        if kind == "204":
            return web.Response(status=204)
        if kind == "304":
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.Response(text=request.path_qs)
