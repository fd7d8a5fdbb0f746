"""Running apps: an event loop (uvloop when installed), sites, a clean stop on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

from .access_log import AccessLogger

__all__ = ["run", "serve_until_stopped"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine on uvloop where available."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def serve_until_stopped(
    apps: list[tuple[web.Application, str, int]],
    *,
    on_started: Callable[[], Awaitable[None]] | None = None,
    shutdown_timeout: float = 30.0,
) -> None:
    """Serve each (app, host, port) until SIGINT or SIGTERM, then drain and clean up."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runners: list[web.AppRunner] = []
    try:
        for app, host, port in apps:
            runner = web.AppRunner(
                app, access_log_class=AccessLogger, shutdown_timeout=shutdown_timeout
            )
            runners.append(runner)
            await runner.setup()
            await web.TCPSite(runner, host, port).start()
        if on_started is not None:
            await on_started()
        await stop.wait()
        log.info("stopping: finishing requests in flight")
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
