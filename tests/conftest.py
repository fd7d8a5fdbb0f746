"""Shared fixtures: a real demo upstream on a real port, real databases (SQLite and MariaDB)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler

from gateway import create_app
from gateway.appkeys import CONFIG
from gateway.server import app_runner
from tests.support.gateways import FakeClock, Gateway, GatewayFactory, make_config
from tests.support.processes import REPO, Processes
from tests.support.services import IN_CI, MYSQL_URL, MySqlDatabase, mysql_problem, redis_problem
from upstream_demo import create_upstream_app

_MYSQL_PROBLEM = mysql_problem()
_REDIS_PROBLEM = redis_problem()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _REDIS_PROBLEM is not None:
        if IN_CI:
            raise pytest.UsageError(f"CI=true but Redis is unreachable: {_REDIS_PROBLEM}")
        skip_redis = pytest.mark.skip(
            reason=f"Redis at 127.0.0.1:6379 unreachable ({_REDIS_PROBLEM})"
        )
        for item in items:
            if "redis" in item.keywords:
                item.add_marker(skip_redis)
    if _MYSQL_PROBLEM is None:
        return
    if IN_CI:
        raise pytest.UsageError(
            f"CI=true but MariaDB at {MYSQL_URL} is unreachable: {_MYSQL_PROBLEM}"
        )
    skip = pytest.mark.skip(
        reason=f"MariaDB at {MYSQL_URL} unreachable ({_MYSQL_PROBLEM}); "
        "set TEST_MYSQL_URL=mysql://user:pass@host:port/ to run these"
    )
    for item in items:
        if "mysql" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Every test using this runs once on SQLite and once on MariaDB."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
        return
    db = MySqlDatabase()
    db.create()
    try:
        yield db.url
    finally:
        db.drop()


@pytest.fixture
def mysql_database() -> Iterator[MySqlDatabase]:
    """A fresh MariaDB database, dropped after the test; mark the test `mysql`."""
    db = MySqlDatabase()
    db.create()
    try:
        yield db
    finally:
        db.drop()


@pytest.fixture(autouse=True)
def served_as_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test servers serve a gateway app as `gateway serve` does (gateway.server.app_runner:
    the front and its lane, parser refusals in the gateway's shape); other apps (upstreams)
    through aiohttp's own runner."""

    async def make_runner(self: TestServer, **kwargs: Any) -> web.AppRunner:
        if CONFIG not in self.app:
            return web.AppRunner(self.app, **kwargs)
        return app_runner(self.app, **kwargs)

    monkeypatch.setattr(TestServer, "_make_runner", make_runner)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def upstream(aiohttp_server: Callable[..., Any]) -> TestServer:
    """The real demo upstream, on a real port."""
    server: TestServer = await aiohttp_server(create_upstream_app())
    return server


@pytest.fixture
def start_gateway(
    aiohttp_client: Callable[..., Any], database_url: str, upstream: TestServer, clock: FakeClock
) -> GatewayFactory:
    """Start a gateway against the demo upstream and the parametrized database."""

    async def start(*, demo_user: bool = False, **config_overrides: Any) -> Gateway:
        """A gateway with `config_overrides`; with `demo_user`, the user guang / 123456 (whom
        `Gateway.login` logs in as) is added to its store."""
        config_overrides.setdefault("upstream_url", str(upstream.make_url("/")))
        config = make_config(database_url=database_url, **config_overrides)
        client = await aiohttp_client(create_app(config, clock=clock))
        gw = Gateway(client, clock)
        if demo_user:
            await gw.add_user()
        return gw

    return start


@pytest.fixture
def gateway_before(
    aiohttp_server: Callable[..., Any], start_gateway: GatewayFactory
) -> GatewayFactory:
    """Start a gateway in front of an upstream made of `handlers` (path -> handler, any method,
    or a whole app) instead of the demo: for tests about what an upstream answers."""

    async def start(
        handlers: dict[str, Handler] | web.Application, **config_overrides: Any
    ) -> Gateway:
        if isinstance(handlers, web.Application):
            app = handlers
        else:
            app = web.Application()
            for path, handler in handlers.items():
                app.router.add_route("*", path, handler)
        server: TestServer = await aiohttp_server(app)
        gw: Gateway = await start_gateway(
            upstream_url=str(server.make_url("/")), **config_overrides
        )
        return gw

    return start


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> AsyncIterator[Gateway]:
    """The default gateway, with the demo user guang / 123456."""
    gw: Gateway = await start_gateway(demo_user=True)
    yield gw


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


@pytest.fixture
def workdir(tmp_path: Path, database_url: str) -> Path:
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    return tmp_path
