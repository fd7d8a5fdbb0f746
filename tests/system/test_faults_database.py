"""The database dies mid-traffic and comes back: tokens keep working, the gateway's own endpoints
answer 503 quickly, it recovers by itself, and no token family is lost or forked."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.support.errors import error_body
from tests.support.processes import (
    Deployment,
    Processes,
    free_port,
)
from tests.support.wire import http, raw_get

pytestmark = pytest.mark.mysql
DB_TIMEOUT = 2.0


class OwnMariaDB:
    """A MariaDB server of this test's own: its own data directory and port, killable."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.datadir = directory / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def install(self) -> None:
        subprocess.run(
            [
                "/usr/bin/mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "/usr/sbin/mariadbd",
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--port={self.port}",
                f"--socket={self.directory / 'mariadb.sock'}",
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-log-bin",
                f"--log-error={self.directory / 'mariadb.err'}",
                "--innodb-buffer-pool-size=32M",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                pymysql.connect(
                    host="127.0.0.1", port=self.port, user="root", connect_timeout=1
                ).close()
                return
            except pymysql.err.OperationalError:
                time.sleep(0.1)
        raise AssertionError("the test's MariaDB did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", database="gateway")
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()


@pytest.fixture
def mariadb(tmp_path: Path) -> Iterator[OwnMariaDB]:
    server = OwnMariaDB(tmp_path)
    server.install()
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


def timed(call: Any, *args: Any) -> tuple[float, Any]:
    started = time.monotonic()
    result = call(*args)
    return time.monotonic() - started, result


def test_database_outage_and_recovery(
    tmp_path: Path, processes: Processes, mariadb: OwnMariaDB
) -> None:
    workdir = tmp_path / "gw"
    workdir.mkdir()
    deployment = Deployment.create(
        processes,
        workdir,
        database_url=f"mysql://root@127.0.0.1:{mariadb.port}/gateway",
        DATABASE_TIMEOUT=f"{DB_TIMEOUT}s",
        LOG_FORMAT="text",
    )
    assert deployment.run("db", "init").returncode == 0
    deployment.add_user("guang", "12345678")
    deployment.start_upstream()
    gateway, base = deployment.start_gateway()

    def login() -> tuple[int, Any]:
        return http("POST", f"{base}/user/login", {"username": "guang", "password": "12345678"})

    sessions = [login()[1] for _ in range(6)]
    assert all("refresh_token" in s for s in sessions)
    # The newest refresh token each client holds, updated only from 200 answers.
    held = [s["refresh_token"] for s in sessions]
    statuses: list[int] = []
    stop = threading.Event()

    def refresher(i: int) -> None:
        while not stop.is_set():
            status, body = http("POST", f"{base}/user/refresh", {"refresh_token": held[i]})
            statuses.append(status)
            if status == 200:
                held[i] = body["refresh_token"]
            time.sleep(0.02)

    threads = [threading.Thread(target=refresher, args=(i,)) for i in range(len(held))]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    mariadb.kill()  # mid-traffic: some refreshes are in flight right now
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert set(statuses) <= {200, 503}, statuses

    # Down: tokens still work, the gateway's own endpoints fail fast and cleanly.
    access = sessions[0]["access_token"]
    assert raw_get(f"{base}/bbb", {"Authorization": f"Bearer {access}"})[:3:2] == (200, b"bbb")
    for call, args in (
        (login, ()),
        (http, ("POST", f"{base}/user/refresh", {"refresh_token": held[0]})),
        (http, ("POST", f"{base}/user/logout", {"refresh_token": held[1]})),
    ):
        elapsed, (status, body) = timed(call, *args)
        assert status == 503, body
        assert body == error_body(
            503, "Service Unavailable", "Database unavailable, try again shortly"
        )
        assert elapsed < DB_TIMEOUT + 2
    status, headers, body = raw_get(f"{base}/readyz")
    assert status == 503 and headers["Retry-After"] == "5"

    # Back: recovery without a restart.
    mariadb.start()
    deadline = time.monotonic() + 20
    while raw_get(f"{base}/readyz")[0] != 200:
        assert time.monotonic() < deadline, "the gateway did not recover"
        time.sleep(0.2)
    assert login()[0] == 200
    # Every family survived with one head: each client's newest token still refreshes (a
    # refresh whose answer was lost in the outage is honoured through the grace window).
    for token in held:
        status, body = http("POST", f"{base}/user/refresh", {"refresh_token": token})
        assert status == 200, body
        assert (
            http("POST", f"{base}/user/refresh", {"refresh_token": body["refresh_token"]})[0] == 200
        )
    revoked = mariadb.query("SELECT COUNT(*) FROM gateway_sessions WHERE revoked_at IS NOT NULL")
    assert revoked == [(0,)]
    assert "Traceback" not in processes.output(gateway)
