"""Gateways under test: config building, a fake clock, an in-process harness, a threaded one."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

from gateway import GatewayConfig, create_app, parse_config
from gateway.appkeys import PASSWORDS, STORE
from gateway.server import app_runner
from gateway.storage import User
from gateway.telemetry.access_log import AccessLogger

from .processes import (
    free_port,
)
from .upstreams import RecordingUpstream

TEST_SECRET = "test-secret-" + "x" * 40


# Cheap argon2 parameters keep the suite fast; production defaults are tested in test_passwords.
FAST_PASSWORDS = {"memory_kib": 8192, "time_cost": 1, "parallelism": 1, "workers": 2}


def access_claims(now: float, **overrides: Any) -> dict[str, Any]:
    """The claims of a well-formed access token issued at `now`, with `overrides` applied."""
    issued = int(now)
    return {
        "sub": "1",
        "username": "guang",
        "token_use": "access",
        "iss": "auth-gateway",
        "aud": "auth-gateway",
        "iat": issued,
        "exp": issued + 60,
        "jti": "j",
        **overrides,
    }


class FakeClock:
    """An injectable clock so expiry is tested without sleeping."""

    def __init__(self) -> None:

        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_config(
    *,
    database_url: str,
    upstream_url: str,
    routes: list[dict[str, Any]] | None = None,
    tokens: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
    extra_upstreams: dict[str, Any] | None = None,
    **sections: Any,
) -> GatewayConfig:
    raw: dict[str, Any] = {
        "database": {"url": database_url},
        "tokens": tokens
        if tokens and "private_key_file" in tokens
        else {"secret": TEST_SECRET, **(tokens or {})},
        "passwords": FAST_PASSWORDS,
        "upstreams": {"demo": {"url": upstream_url, **(upstream or {})}, **(extra_upstreams or {})},
        "routes": routes
        if routes is not None
        else [
            {"path": "/aaa", "upstream": "demo", "auth": "public", "methods": ["GET"]},
            {"path": "/echo/**", "upstream": "demo", "auth": "public"},
            {"path": "/bbb", "upstream": "demo", "auth": "required", "methods": ["GET"]},
            {"path": "/whoami", "upstream": "demo", "auth": "required"},
            {"path": "/private/**", "upstream": "demo", "auth": "required"},
        ],
        **sections,
    }
    return parse_config(raw, environ={})


@dataclass
class Gateway:
    """A running gateway app with helpers for the common steps of a test."""

    client: TestClient[web.Request, web.Application]
    clock: FakeClock

    @property
    def app(self) -> web.Application:
        return self.client.app

    async def add_user(self, username: str = "guang", password: str = "123456") -> User:
        hashed = await self.app[PASSWORDS].hash(password)
        return await self.app[STORE].add_user(username, hashed)

    async def login(self, username: str = "guang", password: str = "123456") -> dict[str, Any]:
        resp = await self.client.post(
            "/user/login", json={"username": username, "password": password}
        )
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    async def refresh(self, pair: dict[str, Any]) -> ClientResponse:
        """POST /user/refresh with the pair's refresh token; the test reads the answer."""
        return await self.client.post(
            "/user/refresh", json={"refresh_token": pair["refresh_token"]}
        )


def route(path: str, auth: str = "required", **options: Any) -> dict[str, Any]:
    """A route to the demo upstream as config.yaml spells it: `route("/bbb")` is
    `{"path": "/bbb", "upstream": "demo", "auth": "required"}`."""
    return {"path": path, "upstream": "demo", "auth": auth, **options}


def bearer_of(pair: dict[str, Any]) -> dict[str, str]:
    """The Authorization header of a token pair's access token."""
    return {"Authorization": f"Bearer {pair['access_token']}"}


GatewayFactory = Callable[..., Any]


def random_secret() -> str:
    return secrets.token_urlsafe(48)


class ThreadedGateway:
    """A gateway in front of a recording upstream, served from an event loop in its own thread,
    so synchronous (hypothesis) tests can send it raw requests over sockets. Log records are
    kept, to check that no secret ever reaches them."""

    def __init__(self, tmp: Path, *, routes: list[dict[str, Any]], **config: Any) -> None:
        self.upstream = RecordingUpstream()
        self.upstream_port, self.gateway_port = free_port(), free_port()
        self.config = make_config(
            database_url=f"sqlite:///{tmp / 'gateway.db'}",
            upstream_url=f"http://127.0.0.1:{self.upstream_port}",
            routes=routes,
            **config,
        )
        self.records: list[logging.LogRecord] = []
        self._handler = _ListHandler(self.records)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ThreadedGateway:
        root = logging.getLogger()
        self._level = root.level
        root.setLevel(logging.DEBUG)  # keep every record, access lines included
        root.addHandler(self._handler)
        self._thread.start()
        assert self._ready.wait(15), "the threaded gateway did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)
        self._loop.close()
        logging.getLogger().removeHandler(self._handler)
        logging.getLogger().setLevel(self._level)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        gateway = create_app(self.config)
        runners = []
        for app, port in ((self.upstream.app, self.upstream_port), (gateway, self.gateway_port)):
            runner = (
                app_runner(app, access_log_class=AccessLogger)
                if app is gateway
                else web.AppRunner(app, access_log_class=AccessLogger)
            )
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            runners.append(runner)
        await gateway[STORE].add_user("guang", await gateway[PASSWORDS].hash("123456"))
        self._ready.set()
        await self._stop.wait()
        for runner in reversed(runners):
            await runner.cleanup()

    def send(self, request: bytes) -> tuple[int, bytes]:
        """Send raw bytes; return the status and the whole response."""
        with socket.create_connection(("127.0.0.1", self.gateway_port), timeout=10) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return int(data.split(b" ", 2)[1]), data

    def get(self, target: str, headers: str = "") -> int:
        return self.send(
            f"GET {target} HTTP/1.1\r\nHost: gw\r\n{headers}Connection: close\r\n\r\n".encode(
                "latin-1"
            )
        )[0]

    def logged(self) -> str:
        return "\n".join(
            record.getMessage() + (str(record.exc_info) if record.exc_info else "")
            for record in list(self.records)
        )


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
