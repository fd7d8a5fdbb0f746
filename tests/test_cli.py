"""The `gateway` command as a user runs it: real processes, real ports, real databases."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .support import TEST_SECRET

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def workdir(tmp_path: Path, database_url: str) -> Path:
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    return tmp_path


def env_for(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "GATEWAY_"))}
    env.update({"DATABASE_URL": database_url, **extra})
    return env


def gateway(
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


def test_check_config(workdir: Path, database_url: str) -> None:
    ok = gateway(workdir, env_for(database_url, JWT_SECRET=TEST_SECRET), "check-config")
    assert ok.returncode == 0, ok.stderr
    assert "config.yaml: OK (4 routes, 1 upstreams, HS256 tokens)" in ok.stdout

    (workdir / "bad.yaml").write_text("routes:\n  - path: nope\n    upstream: x\n    auth: maybe\n")
    bad = gateway(workdir, env_for(database_url), "check-config", "--config", "bad.yaml")
    assert bad.returncode == 2
    assert "configuration error:" in bad.stderr
    assert "routes[0].path: 'nope': must start with '/'" in bad.stderr
    assert "tokens.secret: no signing key" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_user_administration(workdir: Path, database_url: str) -> None:
    env = env_for(database_url)
    init = gateway(workdir, env, "db", "init")
    assert init.returncode == 0, init.stderr
    assert "schema version 1" in init.stdout
    assert gateway(workdir, env, "db", "init").returncode == 0  # idempotent

    add = gateway(workdir, env, "user", "add", "alice", "--password-stdin", stdin="s3cret-pass\n")
    assert add.returncode == 0, add.stderr
    again = gateway(workdir, env, "user", "add", "alice", "--password-stdin", stdin="other-pass\n")
    assert (again.returncode, again.stderr.strip()) == (1, "error: user 'alice' already exists")
    short = gateway(workdir, env, "user", "add", "bob", "--password-stdin", stdin="123\n")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    invalid = gateway(workdir, env, "user", "add", "bad name", "--password-stdin", stdin="x" * 9)
    assert invalid.returncode == 1 and "invalid user name" in invalid.stderr

    assert gateway(workdir, env, "user", "disable", "alice").returncode == 0
    listing = gateway(workdir, env, "user", "list")
    assert listing.returncode == 0
    [row] = [line for line in listing.stdout.splitlines() if "alice" in line]
    assert "disabled" in row
    assert gateway(workdir, env, "user", "enable", "alice").returncode == 0
    assert "active" in gateway(workdir, env, "user", "list").stdout
    passwd = gateway(
        workdir, env, "user", "passwd", "alice", "--password-stdin", stdin="n3w-pass!\n"
    )
    assert passwd.returncode == 0, passwd.stderr
    missing = gateway(workdir, env, "user", "disable", "nobody")
    assert (missing.returncode, missing.stderr.strip()) == (1, "error: no user named 'nobody'")


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


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


def test_serve_in_front_of_the_demo_upstream(
    workdir: Path, database_url: str, processes: Processes
) -> None:
    upstream_port, gateway_port = free_port(), free_port()
    env = env_for(
        database_url,
        JWT_SECRET=TEST_SECRET,
        GATEWAY_PORT=str(gateway_port),
        UPSTREAM_URL=f"http://127.0.0.1:{upstream_port}",
    )
    add = gateway(workdir, env, "user", "add", "guang", "--password-stdin", stdin="12345678\n")
    assert add.returncode == 0, add.stderr
    upstream = processes.start(
        "upstream", ["-m", "upstream_demo", "--port", str(upstream_port)], workdir, env
    )
    server = processes.start("gateway", ["-m", "gateway", "serve"], workdir, env)
    wait_for_port(upstream_port, upstream)
    wait_for_port(gateway_port, server)

    base = f"http://127.0.0.1:{gateway_port}"
    assert http("GET", f"{base}/aaa") == (200, "aaa")
    assert http("GET", f"{base}/bbb")[0] == 401
    status, pair = http("POST", f"{base}/user/login", {"username": "guang", "password": "12345678"})
    assert status == 200
    assert http("GET", f"{base}/bbb", token=pair["access_token"]) == (200, "bbb")
    status, renewed = http("GET", f"{base}/user/refresh?refresh_token={pair['refresh_token']}")
    assert status == 200
    assert http("GET", f"{base}/bbb", token=renewed["access_token"]) == (200, "bbb")

    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=20) == 0
    log = processes.output(server)
    assert "Traceback" not in log
    # Tokens never reach the logs (the refresh token travelled in a query string).
    for secret in (pair["access_token"], pair["refresh_token"], TEST_SECRET, "12345678"):
        assert secret not in log


def test_serve_with_an_unreachable_database_says_so(workdir: Path, database_url: str) -> None:
    env = env_for(
        "mysql://root@127.0.0.1:1/gateway",
        JWT_SECRET=TEST_SECRET,
        GATEWAY_PORT=str(free_port()),
    )
    result = gateway(workdir, env, "serve")
    assert result.returncode == 1
    assert "error: cannot connect to MySQL database 'gateway' at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_to_start_without_a_secret(workdir: Path, database_url: str) -> None:
    result = gateway(workdir, env_for(database_url), "serve")
    assert result.returncode == 2
    assert "no signing key: set JWT_SECRET" in result.stderr


def test_demo_runs_upstream_and_gateway_with_the_demo_user(
    workdir: Path, database_url: str, processes: Processes
) -> None:
    upstream_port, gateway_port = free_port(), free_port()
    env = env_for(
        database_url,
        GATEWAY_PORT=str(gateway_port),
        UPSTREAM_URL=f"http://127.0.0.1:{upstream_port}",
    )
    demo = processes.start("demo", ["-m", "gateway", "demo"], workdir, env)
    wait_for_port(gateway_port, demo)
    base = f"http://127.0.0.1:{gateway_port}"
    status, pair = http("POST", f"{base}/user/login", {"username": "guang", "password": "123456"})
    assert status == 200
    assert http("GET", f"{base}/bbb", token=pair["access_token"]) == (200, "bbb")
    demo.send_signal(signal.SIGINT)
    assert demo.wait(timeout=20) == 0
    assert "DEMO MODE" in processes.output(demo)
