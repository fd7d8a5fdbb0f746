"""Test helpers: config building, a fake clock, a running-gateway harness, MariaDB access."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pymysql
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from gateway import GatewayConfig, parse_config
from gateway.appkeys import PASSWORDS, STORE
from gateway.storage import User

TEST_SECRET = "test-secret-" + "x" * 40
MYSQL_URL = os.environ.get("TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Cheap argon2 parameters keep the suite fast; production defaults are tested in test_passwords.
FAST_PASSWORDS = {"memory_kib": 8192, "time_cost": 1, "parallelism": 1, "workers": 2}


def mysql_args() -> dict[str, Any]:
    url = URL(MYSQL_URL)
    return {
        "host": url.host or "127.0.0.1",
        "port": url.port or 3306,
        "user": url.user or "root",
        "password": url.password or "",
    }


def mysql_problem() -> str | None:
    try:
        pymysql.connect(**mysql_args(), connect_timeout=3).close()
    except pymysql.err.MySQLError as exc:
        return f"{exc}"
    return None


@dataclass
class MySqlDatabase:
    """A throwaway database on the test MariaDB server."""

    name: str = field(default_factory=lambda: f"gw_test_{uuid.uuid4().hex[:12]}")

    @property
    def url(self) -> str:
        return str(URL(MYSQL_URL).with_path(f"/{self.name}"))

    def execute(self, sql: str) -> None:
        conn = pymysql.connect(**mysql_args(), autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create(self) -> None:
        self.execute(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4")

    def drop(self) -> None:
        self.execute(f"DROP DATABASE IF EXISTS `{self.name}`")


class FakeClock:
    """An injectable clock so expiry is tested without sleeping."""

    def __init__(self) -> None:
        import time

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


GatewayFactory = Callable[..., Any]


def random_secret() -> str:
    return secrets.token_urlsafe(48)


async def raw_http(
    host: str, port: int, request_target: str, *, method: str = "GET", headers: str = ""
) -> tuple[int, bytes]:
    """Send a request line as written (no client-side normalization); return status and body."""
    import asyncio

    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            f"{method} {request_target} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}"
            "Connection: close\r\n\r\n".encode("latin-1")
        )
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


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
