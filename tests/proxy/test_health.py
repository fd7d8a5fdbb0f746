"""Passive health of one target: ejection after failures, a back-off that doubles while the
target keeps failing, one probe at a time, and back on the probe's success. Active checks
against a real server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from yarl import URL

from gateway.config import HealthCheckConfig, MetricsConfig, TargetConfig, UpstreamConfig
from gateway.proxy.health import PassiveHealth
from gateway.proxy.targets import Targets
from gateway.telemetry.metrics import GatewayMetrics
from tests.support.gateways import FakeClock
from tests.support.processes import free_port


def health(clock: FakeClock, *, ejectable: bool = True) -> PassiveHealth:
    return PassiveHealth(
        max_failures=3,
        ejection_time=1.0,
        max_ejection_time=5.0,
        ejectable=ejectable,
        clock=clock,
    )


def test_failures_in_a_row_eject_and_a_success_between_them_resets_the_count() -> None:
    clock = FakeClock()
    target = health(clock)
    assert not target.failed(False, refused=False)
    assert not target.failed(False, refused=False)
    target.succeeded(False)
    assert not target.failed(False, refused=False)
    assert not target.failed(False, refused=False)
    assert target.admits()
    assert target.failed(False, refused=False)
    assert not target.admits() and target.retry_after() == 1.0


def test_a_refused_connection_ejects_at_once() -> None:
    target = health(FakeClock())
    assert target.failed(False, refused=True)
    assert not target.admits()


def test_after_the_back_off_one_probe_goes_and_its_success_brings_the_target_back() -> None:
    clock = FakeClock()
    target = health(clock)
    target.failed(False, refused=True)
    clock.advance(1.0)
    assert target.admits()
    assert target.begin() is True  # the probe
    assert not target.admits()  # only one at a time
    # A request sent before the ejection answering now says nothing about the target.
    assert not target.succeeded(False)
    assert not target.admits()
    assert target.succeeded(True)
    assert target.admits() and not target.ejected
    assert target.begin() is False


def test_the_back_off_doubles_while_probes_fail_up_to_the_maximum() -> None:
    clock = FakeClock()
    target = health(clock)
    target.failed(False, refused=True)
    waits = [target.retry_after()]
    for _ in range(4):
        clock.advance(target.retry_after())
        assert target.begin()
        assert target.failed(True, refused=False)  # a failed probe ejects again, longer
        waits.append(target.retry_after())
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    clock.advance(5.0)
    target.begin()
    target.succeeded(True)
    target.failed(False, refused=True)
    assert target.retry_after() == 1.0  # back to the start once it recovered


def test_the_only_target_of_an_upstream_is_never_ejected() -> None:
    target = health(FakeClock(), ejectable=False)
    for _ in range(10):
        assert not target.failed(False, refused=True)
    assert target.admits()


async def test_active_checks_take_a_failing_target_out_until_it_passes_again(
    aiohttp_server: Callable[..., Any],
) -> None:
    answers = {"status": 200}

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(status=answers["status"])

    server = await aiohttp_server(_app(healthz))
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens: never healthy
    upstream = UpstreamConfig(
        name="app",
        url=URL(str(server.make_url("/"))),
        targets=(TargetConfig(URL(str(server.make_url("/")))), TargetConfig(URL(down))),
        health=HealthCheckConfig(path="/healthz", interval=30.0, timeout=0.5, expect=200),
    )
    targets = Targets(upstream, GatewayMetrics(MetricsConfig()))
    assert targets.checks is not None
    up, dead = targets.all
    targets.start()  # the first round runs at once
    try:
        for _ in range(50):
            if not dead.checked_healthy:
                break
            await asyncio.sleep(0.02)
        assert up.checked_healthy and not dead.checked_healthy
        assert [targets.pick() for _ in range(3)] == [up, up, up]
        answers["status"] = 503
        await targets.checks.check_all()
        assert not up.checked_healthy and targets.pick() is None
        refusal = targets.unavailable()
        assert (refusal.status, refusal.headers["Retry-After"]) == (503, "30")
        answers["status"] = 200
        await targets.checks.check_all()
        assert targets.pick() is up
    finally:
        await targets.close()


def _app(healthz: Callable[[web.Request], Awaitable[web.Response]]) -> web.Application:
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    return app
