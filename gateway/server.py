"""Running apps: the event loop (uvloop when installed), sites, signals, and worker processes.

- SIGTERM / SIGINT: stop accepting, let requests in flight finish (up to shutdown_timeout), exit 0.
  The gateway's apps drain first (gateway.draining): their requests go on reading and answering,
  WebSockets are told 1001; aiohttp's own cleanup, which stops reading from every connection at
  once, runs only after that.
- SIGHUP: call the reload hook (the gateway re-reads config.yaml, and its TLS certificates).
- `--workers N`: N processes share the port through SO_REUSEPORT; this process supervises them,
  passes signals on and restarts a worker that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.log import access_logger

from .appkeys import CONFIG, DRAIN, LANE
from .config import PARSER_FIELD_LIMIT, PARSER_MAX_HEADERS
from .front import FrontRunner
from .parser_errors import GatewayRequestHandler, GatewayRunner
from .telemetry.access_log import AccessLogger
from .telemetry.logs import LogOutput

__all__ = ["ListenError", "Site", "app_runner", "run", "serve_until_stopped", "supervise_workers"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_YOUNG_COLLECTION_EVERY = 10_000
# After an app's own drain, what aiohttp's cleanup still waits for a request that outlasted it.
_AFTER_DRAIN = 1.0
# (app, host, port) in plain HTTP, or (app, host, port, TLS context).
Site = tuple[web.Application, str, int] | tuple[web.Application, str, int, ssl.SSLContext | None]


class ListenError(OSError):
    """A site could not listen on its (host, port): the port is in use, the host is not here."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.host = host
        self.port = port


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine on uvloop where available."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def serve_until_stopped(
    sites: Sequence[Site],
    *,
    on_started: Callable[[], Awaitable[None]] | None = None,
    on_reload: Callable[[], Awaitable[object]] | None = None,
    shutdown_timeout: float = 30.0,
    reuse_port: bool = False,
    access_log: bool = True,
) -> None:
    """Serve each (app, host, port) until SIGINT or SIGTERM, then drain, clean up, and write
    every log line still waiting. The apps write their own access lines; `access_log=False`
    also drops aiohttp's for requests its parser refused before any app saw them."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[object]] = set()

    def reload() -> None:
        if on_reload is not None:
            task = asyncio.ensure_future(on_reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)
            task.add_done_callback(_refreeze)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    runners: list[web.AppRunner] = []
    try:
        for app, host, port, *tls in sites:
            runner = app_runner(
                app,
                access_log_class=AccessLogger,
                shutdown_timeout=(
                    min(_AFTER_DRAIN, shutdown_timeout) if DRAIN in app else shutdown_timeout
                ),
                access_log=access_logger if access_log else None,
            )
            runners.append(runner)
            await runner.setup()
            try:
                await web.TCPSite(
                    runner,
                    host,
                    port,
                    ssl_context=tls[0] if tls else None,
                    reuse_port=reuse_port or None,
                ).start()
            except OSError as exc:
                raise ListenError(host, port, exc) from exc
        if on_started is not None:
            await on_started()
        # What start-up made lives as long as the process: frozen out of the collector, a full
        # collection no longer walks it (it did every few seconds under load, a pause of
        # milliseconds each: measured, proxied p99 at 50 connections 21 ms before, 6 ms after).
        # A young collection walks what the requests in flight hold, however often it runs:
        # every 10,000 allocations instead of 700 it runs a fourteenth as often (-3% CPU per
        # request, side by side).
        _freeze()
        gc.set_threshold(_YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])
        await stop.wait()
        log.info("stopping: finishing requests in flight (up to %gs)", shutdown_timeout)
        await _drain(runners, shutdown_timeout)
    finally:
        for stopping in reversed(runners):
            await stopping.cleanup()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
        output = LogOutput.installed()
        if output is not None:
            output.flush()  # the lines of the last requests, before the process exits


def _freeze() -> None:
    gc.collect()
    gc.freeze()


def _refreeze(_reload: asyncio.Future[object]) -> None:
    """After a reload has retired the old routes and pools: what was frozen with them is
    garbage now, which only an unfrozen collection can free (one pause per SIGHUP)."""
    gc.unfreeze()
    _freeze()


def app_runner(app: web.Application, **kwargs: Any) -> web.AppRunner:
    """How an app is served: a gateway app through the front (gateway.front) and its lane,
    unless `server.front` is off; any app with the gateway's answer to what aiohttp's parser
    refuses (gateway.parser_errors)."""
    if CONFIG not in app or not app[CONFIG].server.front:
        return GatewayRunner(app, **kwargs)
    return FrontRunner(
        app,
        handler_class=GatewayRequestHandler,
        lane=app[LANE],
        idle_timeout=app[CONFIG].server.idle_timeout,
        max_head_bytes=PARSER_FIELD_LIMIT,
        max_headers=PARSER_MAX_HEADERS,
        **kwargs,
    )


async def _drain(runners: Sequence[web.AppRunner], grace: float) -> None:
    """Stop accepting on the apps that drain, then wait for their requests in flight."""
    draining = [runner for runner in runners if DRAIN in runner.app]
    for runner in draining:
        for site in list(runner.sites):
            await site.stop()
    left = sum(await asyncio.gather(*(runner.app[DRAIN].drain(grace) for runner in draining)))
    if left:
        log.warning("shutdown timeout: %d requests still in flight are cut off", left)


def supervise_workers(worker_command: Callable[[int], list[str]], count: int) -> int:
    """Start `count` worker processes and keep them running until SIGTERM/SIGINT."""
    workers: dict[int, subprocess.Popen[bytes]] = {}
    stopping = False

    def start(index: int) -> None:
        workers[index] = subprocess.Popen(worker_command(index))  # noqa: S603 - our own argv
        log.info("worker %d started (pid %d)", index, workers[index].pid)

    def pass_on(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, pass_on)
    for index in range(count):
        start(index)
    failed = False
    while workers:
        time.sleep(0.2)
        for index, proc in list(workers.items()):
            code = proc.poll()
            if code is None:
                continue
            if stopping:
                failed |= code != 0
                del workers[index]
            else:
                log.error("worker %d exited with %d; restarting it", index, code)
                time.sleep(1.0)
                start(index)
    return 1 if failed else 0


def worker_argv(argv: Sequence[str], index: int) -> list[str]:
    """This command line again, as worker `index`."""
    return [sys.executable, "-m", "gateway", *argv, "--worker-index", str(index)]
