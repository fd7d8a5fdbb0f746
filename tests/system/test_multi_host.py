"""Three gateway hosts behind a load balancer, each in its own network namespace (its own kernel
network stack and loopback, reached only over a virtual bridge), with MariaDB, Redis and the demo
upstream on hosts of their own. Mixed traffic (logins, refreshes, proxied requests, WebSockets,
logouts) goes through HAProxy while one host is killed with SIGKILL and restarted, every host is
restarted in turn the way Kubernetes stops a pod (out of the balancer, a pause, SIGTERM, drain),
and Redis is restarted.

What it shows, printed as figures: no session lost or forked, no refresh wrongly refused, refresh
reuse and logout effective across hosts (logout within sessions.revocation_poll), failed logins
counted across hosts through Redis (also after its restart), only requests on the killed host fail
(those in flight when it died, and those HAProxy sent it over pooled connections before its health
check noticed), and none at all during the rolling restart or the Redis restart.

Requests in flight at SIGTERM here are ones whose bodies have arrived (logins); uploads still
arriving and open WebSockets at SIGTERM are tested in tests/ops/test_shutdown_drain.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pymysql
import pytest

from tests.support.netns import Host, VirtualNetwork, netns_problem
from tests.support.processes import REPO, env_for, run_gateway
from tests.support.services import IN_CI

pytestmark = pytest.mark.multihost

TOOLS = ("haproxy", "mariadbd", "mariadb-install-db", "redis-server")
GATEWAY_PORT = 8080
GRACE = 3.0  # REFRESH_REUSE_GRACE
LOGIN_MAX_FAILURES = 4
SHUTDOWN_TIMEOUT = 10.0
PAUSE = 1.0  # the preStop pause: out of the balancer, still serving, before SIGTERM
VIRTUAL_USERS = 8
PASSWORD = "multi-host-password"
VU_USERS = ("alice", "bob")
_T = TypeVar("_T")


def revocation_poll() -> float:
    found = re.search(r"revocation_poll: (\d+)s", (REPO / "config.yaml").read_text())
    assert found, "config.yaml sets sessions.revocation_poll in seconds"
    return float(found.group(1))


@dataclass
class Call:
    """One request through the balancer, as the client saw it."""

    kind: str
    start: float
    end: float
    ok: bool
    host: str  # the gateway HAProxy chose (X-Served-By); "?" when no answer said
    detail: str = ""


@dataclass
class Pair:
    access: str
    refresh: str

    @property
    def session(self) -> str:
        return str(_claims(self.refresh)["sid"])

    @property
    def head(self) -> str:
        return str(_claims(self.refresh)["jti"])


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


@dataclass
class Figures:
    """What the run measured; printed whatever the outcome."""

    problems: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    lines: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.lines.append(text)

    def problem(self, text: str) -> None:
        self.problems.append(text)


# --- the hosts ----------------------------------------------------------------------------------


class Cluster:
    """The hosts and what runs on them, with the handles the test pulls."""

    def __init__(self, network: VirtualNetwork, directory: Path) -> None:
        self.network, self.directory = network, directory
        self.lb = network.add_host("lb", 10)
        self.gateways = {
            name: network.add_host(name, 10 + i) for i, name in ((1, "h1"), (2, "h2"), (3, "h3"))
        }
        self.data = network.add_host("data", 20)
        self.upstream = network.add_host("up", 30)
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.db_password = secrets.token_hex(12)
        self.workdir = directory / "gateway"
        self.workdir.mkdir()
        shutil.copy(REPO / "config.yaml", self.workdir / "config.yaml")
        self.env = env_for(
            f"mysql://gateway:{self.db_password}@{self.data.address}:3306/gateway",
            GATEWAY_HOST="0.0.0.0",
            GATEWAY_PORT=str(GATEWAY_PORT),
            REDIS_URL=f"redis://{self.data.address}:6379/0",
            JWT_SECRET=secrets.token_urlsafe(48),
            UPSTREAM_URL=f"http://{self.upstream.address}:3000",
            TRUSTED_PROXIES=self.lb.address,
            REFRESH_REUSE_GRACE=f"{GRACE:g}s",
            LOGIN_MAX_FAILURES=str(LOGIN_MAX_FAILURES),
            SHUTDOWN_TIMEOUT=f"{SHUTDOWN_TIMEOUT:g}s",
            DATABASE_TIMEOUT="3s",
            LOG_FORMAT="text",
        )
        self.haproxy_socket = directory / "haproxy.sock"
        self.setup_seconds = 0.0

    def url(self, name: str) -> str:
        return f"http://{self.gateways[name].address}:{GATEWAY_PORT}"

    @property
    def balancer(self) -> str:
        return f"http://{self.lb.address}:{GATEWAY_PORT}"

    def start(
        self, name: str, host: Host, argv: list[str], env: dict[str, str] | None = None
    ) -> None:
        self.running[name] = self.network.start(
            host, argv, log=self.directory / f"{name}.log", env=env, cwd=self.workdir
        )

    # MariaDB and Redis, on the data host

    def start_mariadb(self) -> None:
        datadir = self.directory / "mariadb"
        subprocess.run(
            [
                _tool("mariadb-install-db"),
                "--no-defaults",
                f"--datadir={datadir}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.start(
            "mariadb",
            self.data,
            [
                _tool("mariadbd"),
                "--no-defaults",
                f"--datadir={datadir}",
                "--port=3306",
                f"--bind-address={self.data.address}",
                f"--socket={self.directory / 'mariadb.sock'}",
                "--user=root",
                "--skip-log-bin",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                f"--log-error={self.directory / 'mariadb.err'}",
            ],
        )
        _wait(lambda: self._mysql_answers(), 60, "MariaDB on the data host")
        subnet = str(self.network.subnet.network_address).rpartition(".")[0]
        self.sql(
            "CREATE DATABASE gateway CHARACTER SET utf8mb4",
            f"CREATE USER 'gateway'@'{subnet}.%' IDENTIFIED BY '{self.db_password}'",
            f"GRANT ALL ON gateway.* TO 'gateway'@'{subnet}.%'",
        )

    def _mysql_answers(self) -> bool:
        # pymysql leaks its socket when the connect fails: wait for the server's socket first.
        if not (self.directory / "mariadb.sock").exists():
            return False
        try:
            self.sql("SELECT 1")
        except pymysql.err.MySQLError:
            return False
        return True

    def sql(self, *statements: str) -> list[tuple[Any, ...]]:
        """As root over the server's socket file (which no network namespace hides)."""
        conn = pymysql.connect(unix_socket=str(self.directory / "mariadb.sock"), user="root")
        try:
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
                rows = list(cur.fetchall())
            conn.commit()
            return rows
        finally:
            conn.close()

    def start_redis(self) -> None:
        self.start(
            "redis",
            self.data,
            [
                _tool("redis-server"),
                "--port",
                "6379",
                "--bind",
                self.data.address,
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
        )
        _wait(lambda: _connects(self.data.address, 6379), 20, "Redis on the data host")

    def stop(self, name: str, signum: signal.Signals = signal.SIGTERM) -> int:
        proc = self.running.pop(name)
        proc.send_signal(signum)
        return proc.wait(timeout=SHUTDOWN_TIMEOUT + 10)

    # the demo upstream, the gateways, the balancer

    def start_upstream(self) -> None:
        self.start(
            "upstream",
            self.upstream,
            [sys.executable, "-m", "upstream_demo", "--host", "0.0.0.0", "--port", "3000"],
        )
        _wait(lambda: _connects(self.upstream.address, 3000), 30, "the demo upstream")

    def start_gateway(self, name: str) -> None:
        self.start(
            name, self.gateways[name], [sys.executable, "-m", "gateway", "serve"], env=self.env
        )

    def gateway_ready(self, name: str) -> bool:
        return _get_status(f"{self.url(name)}/readyz") == 200

    def start_haproxy(self) -> None:
        servers = "\n".join(
            f"    server {name} {host.address}:{GATEWAY_PORT}"
            for name, host in self.gateways.items()
        )
        config = self.directory / "haproxy.cfg"
        config.write_text(
            f"""global
    maxconn 4096
    stats socket {self.haproxy_socket} mode 600 level admin

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout tunnel 60s
    timeout http-keep-alive 10s
    # A refused connection is tried again, the last time on another server.
    retries 2
    option redispatch 1
    option forwardfor

frontend gateway
    bind {self.lb.address}:{GATEWAY_PORT}
    default_backend gateways
    # Which gateway answered (errors HAProxy makes up included), for the client's records.
    http-after-response set-header X-Served-By %s

backend gateways
    balance roundrobin
    option httpchk
    http-check send meth GET uri /readyz
    http-check expect status 200
    default-server check inter 300ms fastinter 200ms downinter 300ms rise 2 fall 2
{servers}
"""
        )
        self.start("haproxy", self.lb, [_tool("haproxy"), "-db", "-f", str(config)])
        _wait(
            lambda: all(self.balanced(n, "UP") for n in self.gateways),
            30,
            "HAProxy seeing every gateway up",
        )

    def haproxy(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.haproxy_socket))
            sock.sendall(command.encode() + b"\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.decode()

    def balanced(self, name: str, status: str) -> bool:
        """Whether HAProxy's `show stat` says the gateway is UP, DOWN (or DOWN 1/2), DRAIN..."""
        try:
            stat = self.haproxy("show stat")
        except OSError:
            return False
        header, *rows = stat.lstrip("# ").splitlines()
        columns = header.split(",")
        for row in rows:
            values = dict(zip(columns, row.split(","), strict=False))
            if values.get("pxname") == "gateways" and values.get("svname") == name:
                return values["status"].split()[0] == status
        return False


def _tool(name: str) -> str:
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    assert found, name
    return found


def _connects(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - the test network
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


async def _await(predicate: Callable[[], bool], limit: float, what: str) -> float:
    """Poll a blocking predicate off the loop; return how long it took."""
    started = time.monotonic()
    while not await asyncio.to_thread(predicate):
        if time.monotonic() - started > limit:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture
def network() -> Iterator[VirtualNetwork]:
    problem = netns_problem()
    if problem is not None:
        pytest.skip(f"network namespaces are not available: {problem}")
    missing = [
        t for t in TOOLS if not shutil.which(t, path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    ]
    if missing:
        if IN_CI:
            pytest.fail(
                f"CI=true but {', '.join(missing)} not installed (apt-get install haproxy ...)"
            )
        pytest.skip(
            f"not installed: {', '.join(missing)} (Debian: haproxy, mariadb-server, redis-server)"
        )
    net = VirtualNetwork()
    try:
        net.open()
        yield net
    finally:
        net.close()


@pytest.fixture
def cluster(network: VirtualNetwork, tmp_path: Path) -> Cluster:
    started = time.monotonic()
    cluster = Cluster(network, tmp_path)
    cluster.start_mariadb()
    cluster.start_redis()
    cluster.start_upstream()
    assert run_gateway(cluster.workdir, cluster.env, "db", "init").returncode == 0
    users = [*VU_USERS, "carol", "limited1", "limited2"]
    with ThreadPoolExecutor(len(users)) as pool:
        added = list(
            pool.map(
                lambda user: run_gateway(
                    cluster.workdir,
                    cluster.env,
                    "user",
                    "add",
                    user,
                    "--password-stdin",
                    stdin=f"{PASSWORD}\n",
                ),
                users,
            )
        )
    assert [a.returncode for a in added] == [0] * len(users), [a.stderr for a in added]
    for name in cluster.gateways:
        cluster.start_gateway(name)
    for name in cluster.gateways:
        _wait(partial(cluster.gateway_ready, name), 60, f"gateway {name}")
    cluster.start_haproxy()
    cluster.setup_seconds = time.monotonic() - started
    return cluster


# --- the client ---------------------------------------------------------------------------------


class Traffic:
    """Virtual users sending mixed traffic through the balancer, recording every call."""

    def __init__(self, cluster: Cluster, figures: Figures) -> None:
        self.cluster, self.figures = cluster, figures
        self.calls: list[Call] = []
        self.stopping = asyncio.Event()

    async def call(
        self,
        http: aiohttp.ClientSession,
        kind: str,
        method: str,
        path: str,
        *,
        expect: int = 200,
        token: str | None = None,
        body: Any = None,
    ) -> tuple[int, Any] | None:
        """One request; None when it failed (and it was recorded as failed)."""
        start, host = time.monotonic(), "?"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with http.request(
                method, self.cluster.balancer + path, json=body, headers=headers
            ) as resp:
                host = resp.headers.get("X-Served-By", "?")
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.calls.append(Call(kind, start, time.monotonic(), False, host, repr(exc)))
            return None
        ok = status == expect
        detail = "" if ok else f"{status} {raw[:200]!r}"
        self.calls.append(Call(kind, start, time.monotonic(), ok, host, detail))
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    async def attempts(
        self, http: aiohttp.ClientSession, kind: str, path: str, body: Any, tries: int
    ) -> AsyncIterator[tuple[int, Any] | None]:
        """Up to `tries` POSTs of `body`, 0.3 s apart, until the caller stops listening: a call
        can be lost while hosts die, and the client's answer to that is to try again."""
        for _ in range(tries):
            yield await self.call(http, kind, "POST", path, body=body)
            await asyncio.sleep(0.3)

    async def login(self, http: aiohttp.ClientSession, user: str) -> Pair:
        body = {"username": user, "password": PASSWORD}
        async for answer in self.attempts(http, "login", "/user/login", body, tries=10):
            if answer is not None and answer[0] == 200:
                self.figures.counts["logins"] += 1
                return Pair(answer[1]["access_token"], answer[1]["refresh_token"])
        raise AssertionError(f"{user} could not log in")

    async def refresh(self, http: aiohttp.ClientSession, pair: Pair) -> Pair:
        """Rotate; when the answer is lost, present the same token again (the grace window)."""
        body, retried = {"refresh_token": pair.refresh}, False
        async for answer in self.attempts(http, "refresh", "/user/refresh", body, tries=8):
            if answer is not None and answer[0] == 200:
                self.figures.counts["refreshes"] += 1
                if retried:
                    self.figures.counts["refreshes retried after a lost answer"] += 1
                return Pair(answer[1]["access_token"], answer[1]["refresh_token"])
            if answer is not None and answer[0] == 401:
                self.figures.problem(f"refresh wrongly refused: {answer[1]}")
                raise SessionLost
            retried = True
        self.figures.problem("a refresh never got an answer")
        raise SessionLost

    async def logout(self, http: aiohttp.ClientSession, pair: Pair) -> None:
        body = {"refresh_token": pair.refresh}
        async for answer in self.attempts(http, "logout", "/user/logout", body, tries=10):
            if answer is not None and answer[0] == 200:
                self.figures.counts["logouts"] += 1
                return
        raise AssertionError("logout never succeeded")

    async def websocket(self, http: aiohttp.ClientSession, pair: Pair, step: int) -> None:
        start = time.monotonic()
        try:
            async with http.ws_connect(
                self.cluster.balancer + "/ws", headers={"Authorization": f"Bearer {pair.access}"}
            ) as ws:
                hello = await ws.receive_json(timeout=10)
                await ws.send_str(f"ping {step}")
                echo = await ws.receive_str(timeout=10)
                await ws.close()
            ok = hello.get("user_id") is not None and echo == f"ping {step}"
            self.calls.append(
                Call(
                    "websocket", start, time.monotonic(), ok, "?", "" if ok else repr((hello, echo))
                )
            )
            self.figures.counts["websocket sessions"] += ok
        except (aiohttp.ClientError, TimeoutError, TypeError, ValueError) as exc:
            self.calls.append(Call("websocket", start, time.monotonic(), False, "?", repr(exc)))

    async def user(self, index: int) -> Pair | None:
        user = VU_USERS[index % len(VU_USERS)]
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            pair = await self.login(http, user)
            step = 0
            try:
                while not self.stopping.is_set():
                    step += 1
                    answer = await self.call(http, "proxied", "GET", "/bbb", token=pair.access)
                    if answer is not None and answer[0] == 200 and answer[1] != "bbb":
                        self.figures.problem(f"/bbb answered {answer[1]!r}")
                    answer = await self.call(http, "proxied", "GET", "/whoami", token=pair.access)
                    if (
                        answer is not None
                        and answer[0] == 200
                        and isinstance(answer[1], dict)
                        and answer[1].get("username") != user
                    ):
                        self.figures.problem(f"/whoami said {answer[1]!r} to {user}")
                    await self.call(http, "public", "GET", "/aaa")
                    if step % 3 == 0:
                        pair = await self.refresh(http, pair)
                    if step % 4 == (index % 4):
                        await self.websocket(http, pair, step)
                    if step % 20 == 10:
                        await self.logout(http, pair)
                        pair = await self.login(http, user)
                    await asyncio.sleep(0.02)
            except SessionLost:
                return None
        return pair


class SessionLost(Exception):
    """A virtual user's session was refused: recorded as a problem, the user stops."""


# --- the checks between and during the faults ---------------------------------------------------


async def _direct(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as resp:
        raw = await resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode(errors="replace")


async def login_on(
    http: aiohttp.ClientSession, cluster: Cluster, host: str, user: str, password: str = PASSWORD
) -> tuple[int, Any]:
    return await _direct(
        http,
        "POST",
        f"{cluster.url(host)}/user/login",
        json={"username": user, "password": password},
    )


async def refused_on_every_host(
    http: aiohttp.ClientSession, cluster: Cluster, figures: Figures, access: str, what: str
) -> str:
    """How long each host kept accepting the access token of an ended session (polling /bbb
    every 50 ms), in words for a note; a problem where `what` lived past the revocation bound
    (revocation_poll + 1 s)."""
    limit = revocation_poll() + 1.0
    hosts = list(cluster.gateways)
    started = time.monotonic()

    async def one(host: str) -> float:
        while True:
            status, _ = await _direct(
                http,
                "GET",
                f"{cluster.url(host)}/bbb",
                headers={"Authorization": f"Bearer {access}"},
            )
            if status == 401:
                return time.monotonic() - started
            if time.monotonic() - started > limit + 5:
                return float("inf")
            await asyncio.sleep(0.05)

    times = dict(zip(hosts, await asyncio.gather(*(one(h) for h in hosts)), strict=True))
    if max(times.values()) > limit:
        figures.problem(f"{what} lived past {limit:g}s: {times}")
    return ", ".join(f"{h} after {t * 1000:.0f} ms" for h, t in times.items())


async def refresh_on(
    http: aiohttp.ClientSession, cluster: Cluster, host: str, refresh_token: str
) -> tuple[int, Any]:
    """Present a refresh token to one host, past the balancer."""
    return await _direct(
        http, "POST", f"{cluster.url(host)}/user/refresh", json={"refresh_token": refresh_token}
    )


async def check_reuse_across_hosts(
    http: aiohttp.ClientSession, cluster: Cluster, figures: Figures
) -> None:
    status, first = await login_on(http, cluster, "h1", "carol")
    assert status == 200, first
    status, second = await refresh_on(http, cluster, "h2", first["refresh_token"])
    assert status == 200, second
    status, third = await refresh_on(http, cluster, "h3", second["refresh_token"])
    assert status == 200, third
    await asyncio.sleep(GRACE + 0.5)
    # The first token was used on h2; presented again on h3 it is theft.
    status, body = await refresh_on(http, cluster, "h3", first["refresh_token"])
    if (status, body.get("message") if isinstance(body, dict) else body) != (
        401,
        "Refresh token was already used; the session has been revoked",
    ):
        figures.problem(
            f"reuse on h3 of a token used on h2 was not refused as reuse: {status} {body}"
        )
    status, body = await refresh_on(http, cluster, "h1", third["refresh_token"])
    if status != 401:
        figures.problem(f"the newest token of a revoked session still refreshed on h1: {status}")
    refused = await refused_on_every_host(
        http, cluster, figures, third["access_token"], "a revoked session's access token"
    )
    figures.note(
        "reuse detection   token used on h2, presented on h3 after the grace window: 401 reuse; "
        "session's newest refresh token refused on h1; its access token refused on " + refused
    )


async def check_logout_across_hosts(
    http: aiohttp.ClientSession, cluster: Cluster, figures: Figures
) -> None:
    status, pair = await login_on(http, cluster, "h2", "carol")
    assert status == 200, pair
    auth = {"Authorization": f"Bearer {pair['access_token']}"}
    for host in cluster.gateways:
        status, _ = await _direct(http, "GET", f"{cluster.url(host)}/bbb", headers=auth)
        assert status == 200, host
    status, _ = await _direct(http, "POST", f"{cluster.url('h2')}/user/logout", headers=auth)
    assert status == 200
    refused = await refused_on_every_host(
        http, cluster, figures, pair["access_token"], "a logged-out access token"
    )
    figures.note(
        f"logout on h2      access token refused on {refused}"
        f" (bound: revocation_poll {revocation_poll():g}s + one query)"
    )


async def check_limits_shared(
    http: aiohttp.ClientSession, cluster: Cluster, figures: Figures, user: str, when: str
) -> None:
    hosts = ["h1", "h2", "h3", "h1"][:LOGIN_MAX_FAILURES]
    failures = [(await login_on(http, cluster, host, user, "wrong-password"))[0] for host in hosts]
    after = {host: (await login_on(http, cluster, host, user))[0] for host in ("h2", "h3")}
    figures.note(
        f"login limits      {when}{LOGIN_MAX_FAILURES} wrong passwords on "
        f"{', '.join(hosts)} -> {failures}; then the right one: "
        + ", ".join(f"{h} {s}" for h, s in after.items())
    )
    if failures != [401] * len(hosts) or set(after.values()) != {429}:
        figures.problem(f"failed logins were not counted across hosts ({when}): {failures} {after}")


# --- the run ------------------------------------------------------------------------------------


async def rolling_restart(cluster: Cluster, figures: Figures, http: aiohttp.ClientSession) -> None:
    """Each host the way Kubernetes replaces a pod: out of the balancer (the endpoint leaves the
    Service), a pause (preStop), SIGTERM, drain, start, ready, back in; the next only then.
    Logins sent to the host just before SIGTERM are in flight (hashing) and must finish."""
    for name in cluster.gateways:
        await asyncio.to_thread(cluster.haproxy, f"set server gateways/{name} state drain")
        await asyncio.sleep(PAUSE)
        proc = cluster.running[name]
        logins = [
            asyncio.create_task(timed(login_on(http, cluster, name, "carol"))) for _ in range(4)
        ]
        await asyncio.sleep(0.05)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        answers = await asyncio.gather(*logins)
        code = await asyncio.to_thread(proc.wait, SHUTDOWN_TIMEOUT + 5)
        drained = time.monotonic() - signalled
        cluster.running.pop(name)
        after = [end - signalled for end, _ in answers]
        statuses = [answer[0] for _, answer in answers]
        if statuses != [200] * len(logins) or code != 0 or max(after) <= 0:
            figures.problem(f"{name} did not drain: logins {statuses} ending {after}, exit {code}")
        cluster.start_gateway(name)
        ready = await _await(partial(cluster.gateway_ready, name), 60, f"{name} ready")
        await asyncio.to_thread(cluster.haproxy, f"set server gateways/{name} state ready")
        await _await(partial(cluster.balanced, name, "UP"), 30, f"{name} UP")
        figures.note(
            f"rolling restart   {name}: out of HAProxy, {PAUSE:g}s pause, SIGTERM with "
            f"{sum(a > 0 for a in after)} logins in flight -> {statuses} (last "
            f"{max(after):.2f}s after SIGTERM); exited {code} after {drained:.1f}s; ready "
            f"{ready:.1f}s after start"
        )


async def timed(call: Awaitable[_T]) -> tuple[float, _T]:
    result = await call
    return time.monotonic(), result


async def run_with_faults(cluster: Cluster, figures: Figures) -> Traffic:
    traffic = Traffic(cluster, figures)
    users = [asyncio.create_task(traffic.user(i)) for i in range(VIRTUAL_USERS)]
    windows: dict[str, tuple[float, float]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        await asyncio.sleep(2)
        await check_reuse_across_hosts(http, cluster, figures)
        await check_logout_across_hosts(http, cluster, figures)
        await check_limits_shared(http, cluster, figures, "limited1", "")

        victim = cluster.running.pop("h2")
        killed = time.monotonic()
        victim.kill()
        await asyncio.to_thread(victim.wait)
        await _await(partial(cluster.balanced, "h2", "DOWN"), 10, "h2 DOWN")
        marked_down = time.monotonic()
        await asyncio.sleep(1.0)
        cluster.start_gateway("h2")
        await _await(partial(cluster.balanced, "h2", "UP"), 60, "h2 UP again")
        windows["kill"] = (killed, time.monotonic())
        figures.note(
            f"SIGKILL           h2 killed; HAProxy marked it down after "
            f"{marked_down - killed:.1f}s; restarted and up after {time.monotonic() - killed:.1f}s"
        )
        await asyncio.sleep(1.0)

        started = time.monotonic()
        await rolling_restart(cluster, figures, http)
        windows["rolling restart"] = (started, time.monotonic())
        await asyncio.sleep(1.0)

        started = time.monotonic()
        await asyncio.to_thread(cluster.stop, "redis")
        await asyncio.sleep(1.0)  # logins meanwhile are not limited; nothing else notices
        await asyncio.to_thread(cluster.start_redis)
        await asyncio.sleep(0.5)
        windows["Redis restart"] = (started, time.monotonic())
        await check_limits_shared(http, cluster, figures, "limited2", "after the Redis restart: ")
        await asyncio.sleep(1.0)
    traffic.stopping.set()
    finals = await asyncio.gather(*users)
    await check_sessions(
        cluster, traffic, figures, [p for p in finals if p is not None], len(finals)
    )
    summarize(traffic, figures, windows, killed, marked_down)
    return traffic


async def check_sessions(
    cluster: Cluster, traffic: Traffic, figures: Figures, finals: list[Pair], users: int
) -> None:
    """Every user's newest token is its session's head in the database and still rotates; only
    the sessions the test revoked are revoked, and for the reasons it revoked them."""
    if len(finals) != users:
        figures.problem(f"{users - len(finals)} virtual users lost their session")
    heads = (
        dict(
            (row[0], (row[1], row[2]))
            for row in cluster.sql(
                "SELECT id, current_jti, revoked_at FROM gateway.gateway_sessions WHERE id IN ("
                + ",".join(f"'{p.session}'" for p in finals)
                + ")"
            )
        )
        if finals
        else {}
    )
    mismatched = [p.session for p in finals if heads.get(p.session) != (p.head, None)]
    if mismatched:
        figures.problem(
            f"sessions whose client and database disagree (forked or lost): {mismatched}"
        )
    reasons = dict(
        cluster.sql(
            "SELECT revoked_reason, COUNT(*) FROM gateway.gateway_sessions"
            " WHERE revoked_at IS NOT NULL GROUP BY revoked_reason"
        )
    )
    expected = {"logout": figures.counts["logouts"] + 1, "refresh token reuse": 1}
    if reasons != expected:
        figures.problem(
            f"revoked sessions {reasons}, expected {expected} (a false reuse detection?)"
        )
    async with aiohttp.ClientSession() as http:
        rotated = [
            (
                await _direct(
                    http,
                    "POST",
                    f"{cluster.balancer}/user/refresh",
                    json={"refresh_token": p.refresh},
                )
            )[0]
            for p in finals
        ]
    if rotated != [200] * len(finals):
        figures.problem(f"final refreshes: {rotated}")
    total = cluster.sql("SELECT COUNT(*) FROM gateway.gateway_sessions")[0][0]
    figures.note(
        f"sessions          {total} in the database; {len(finals)}/{users} users' newest tokens "
        f"are their session's head and rotate once more; revoked: {reasons} "
        f"(forked or lost: {len(mismatched)})"
    )


def _kinds(calls: list[Call]) -> str:
    return (
        ", ".join(f"{kind} {n}" for kind, n in sorted(Counter(c.kind for c in calls).items()))
        or "none"
    )


def summarize(
    traffic: Traffic,
    figures: Figures,
    windows: dict[str, tuple[float, float]],
    killed: float,
    marked_down: float,
) -> None:
    calls = traffic.calls
    failed = [c for c in calls if not c.ok]
    # What the kill may cost: requests on h2 (or cut off without an answer) still running when it
    # died, and those HAProxy sent to h2 over its pooled keep-alive connections before its health
    # check marked h2 down (HAProxy closes those without an answer, so that clients may retry).
    on_h2 = [c for c in failed if c.host in ("h2", "?") and c.end >= killed]
    in_flight = [c for c in on_h2 if c.start <= killed]
    before_down = [c for c in on_h2 if killed < c.start <= marked_down]
    other = [c for c in failed if c not in in_flight and c not in before_down]
    by_kind = Counter(c.kind for c in calls)
    by_host = Counter(c.host for c in calls if c.host != "?")
    seconds = max(c.end for c in calls) - min(c.start for c in calls)
    figures.note(
        f"traffic           {len(calls)} requests in {seconds:.0f}s through HAProxy: "
        + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items()))
        + "; answered by "
        + ", ".join(f"{h} {n}" for h, n in sorted(by_host.items()))
    )
    figures.note(
        "sessions driven   " + ", ".join(f"{k} {n}" for k, n in sorted(figures.counts.items()))
    )
    figures.note(
        f"failed requests   {len(failed)}: {len(in_flight)} in flight on h2 when it was killed"
        f" ({_kinds(in_flight)}), {len(before_down)} sent to h2 by HAProxy in the "
        f"{marked_down - killed:.1f}s before it marked h2 down ({_kinds(before_down)}), "
        f"{len(other)} otherwise"
    )
    for name, (start, end) in windows.items():
        during = [c for c in calls if start <= c.start <= end]
        bad = [c for c in during if not c.ok]
        figures.note(
            f"  started during the {name + ':':<17}{len(during)} requests ({_kinds(during)}), "
            f"{len(bad)} failed"
        )
        if name != "kill" and bad:
            figures.problem(
                f"requests failed during the {name}: "
                + "; ".join(f"{c.kind} on {c.host}: {c.detail[:80]}" for c in bad[:5])
            )
    if other:
        figures.problem(
            "requests failed that the kill does not explain: "
            + "; ".join(
                f"{c.kind} on {c.host} from {c.start - killed:+.3f}s to {c.end - killed:+.3f}s "
                f"after the kill: {c.detail[:80]}"
                for c in other[:5]
            )
        )
    for host in ("h1", "h2", "h3"):
        if not by_host[host]:
            figures.problem(f"{host} answered nothing")


async def test_three_hosts_behind_a_balancer_survive_crash_rolling_restart_and_redis_restart(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    figures = Figures()
    try:
        await run_with_faults(cluster, figures)
    finally:
        with capsys.disabled():
            print(
                "\n--- multi-host: 3 gateways ("
                + ", ".join(f"{n} {h.address}" for n, h in cluster.gateways.items())
                + f"), HAProxy {cluster.lb.address}, MariaDB and Redis {cluster.data.address}, "
                f"upstream {cluster.upstream.address}"
            )
            for line in figures.lines:
                print(line)
            print(
                f"run time          {cluster.setup_seconds:.0f}s to set up the hosts, "
                f"{time.monotonic() - started:.0f}s of traffic and faults"
            )
    assert not figures.problems, "\n".join(figures.problems)
