"""Test helpers: config building, a fake clock, a running-gateway harness, MariaDB access."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from gateway import GatewayConfig, create_app, parse_config
from gateway.access_log import AccessLogger
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


def redis_problem() -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(16).startswith(b"+PONG"):
                return "no PONG"
    except OSError as exc:
        return str(exc)
    return None


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited early with code {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listened on {port} within {timeout}s")


def http(method: str, url: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http to localhost
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


class Processes:
    """Background processes whose output goes to files; all stopped at the end of the test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(
        self, name: str, args: list[str], cwd: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        log = self.directory / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, *args], cwd=cwd, env=env, stdout=out, stderr=out
            )
        self.running.append((proc, log))
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return next(log for p, log in self.running if p is proc).read_text()

    def stop_all(self) -> None:
        for proc, _ in self.running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


REPO = Path(__file__).resolve().parent.parent


def env_for(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "GATEWAY_"))}
    env.update({"DATABASE_URL": database_url, **extra})
    return env


def run_gateway(
    workdir: Path, env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=workdir,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def start_gateway_process(
    processes: Processes, workdir: Path, env: dict[str, str], *args: str, name: str = "gateway"
) -> tuple[subprocess.Popen[bytes], str]:
    """`gateway serve` as a real process on env's GATEWAY_PORT; returns it and its base URL."""
    proc = processes.start(name, ["-m", "gateway", "serve", *args], workdir, env)
    port = int(env["GATEWAY_PORT"])
    wait_for_port(port, proc, timeout=30)
    return proc, f"http://127.0.0.1:{port}"


def raw_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """A GET that returns status, headers and body without raising on 4xx/5xx."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - localhost
    try:
        with urllib.request.urlopen(request, timeout=15) as resp:  # noqa: S310
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


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
            runner = web.AppRunner(app, access_log_class=AccessLogger)
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
