"""The `gateway` command as a user runs it: real processes, real ports, real databases."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

from gateway.storage import SCHEMA_VERSION, Session, create_store
from tests.support.gateways import TEST_SECRET
from tests.support.processes import (
    Deployment,
    Processes,
    env_for,
    free_port,
    run_gateway,
    wait_for_port,
)
from tests.support.wire import http


def test_check_config(workdir: Path, database_url: str) -> None:
    ok = run_gateway(workdir, env_for(database_url, JWT_SECRET=TEST_SECRET), "check-config")
    assert ok.returncode == 0, ok.stderr
    assert "config.yaml: OK (7 routes, 1 upstreams, HS256 tokens)" in ok.stdout

    (workdir / "bad.yaml").write_text("routes:\n  - path: nope\n    upstream: x\n    auth: maybe\n")
    bad = run_gateway(workdir, env_for(database_url), "check-config", "--config", "bad.yaml")
    assert bad.returncode == 2
    assert "configuration error:" in bad.stderr
    assert "routes[0].path: 'nope': must start with '/'" in bad.stderr
    assert "tokens.secret: no signing key" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_user_administration(workdir: Path, database_url: str) -> None:
    env = env_for(database_url)
    init = run_gateway(workdir, env, "db", "init")
    assert init.returncode == 0, init.stderr
    assert f"schema version {SCHEMA_VERSION}" in init.stdout
    assert run_gateway(workdir, env, "db", "init").returncode == 0  # idempotent

    add = run_gateway(
        workdir, env, "user", "add", "alice", "--password-stdin", stdin="s3cret-pass\n"
    )
    assert add.returncode == 0, add.stderr
    again = run_gateway(
        workdir, env, "user", "add", "alice", "--password-stdin", stdin="other-pass\n"
    )
    assert (again.returncode, again.stderr.strip()) == (1, "error: user 'alice' already exists")
    short = run_gateway(workdir, env, "user", "add", "bob", "--password-stdin", stdin="123\n")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    invalid = run_gateway(
        workdir, env, "user", "add", "bad name", "--password-stdin", stdin="x" * 9
    )
    assert invalid.returncode == 1 and "invalid user name" in invalid.stderr

    assert run_gateway(workdir, env, "user", "disable", "alice").returncode == 0
    listing = run_gateway(workdir, env, "user", "list")
    assert listing.returncode == 0
    [row] = [line for line in listing.stdout.splitlines() if "alice" in line]
    assert "disabled" in row
    assert run_gateway(workdir, env, "user", "enable", "alice").returncode == 0
    assert "active" in run_gateway(workdir, env, "user", "list").stdout
    passwd = run_gateway(
        workdir, env, "user", "passwd", "alice", "--password-stdin", stdin="n3w-pass!\n"
    )
    assert passwd.returncode == 0, passwd.stderr
    missing = run_gateway(workdir, env, "user", "disable", "nobody")
    assert (missing.returncode, missing.stderr.strip()) == (1, "error: no user named 'nobody'")


def test_serve_in_front_of_the_demo_upstream(
    workdir: Path, database_url: str, processes: Processes
) -> None:
    deployment = Deployment.create(
        processes, workdir, database_url=database_url, JWT_SECRET=TEST_SECRET
    )
    deployment.add_user("guang", "12345678")
    deployment.start_upstream()
    server, base = deployment.start_gateway()
    gateway_port = int(deployment.env["GATEWAY_PORT"])

    assert http("GET", f"{base}/aaa") == (200, "aaa")
    assert http("GET", f"{base}/bbb")[0] == 401
    status, pair = http("POST", f"{base}/user/login", {"username": "guang", "password": "12345678"})
    assert status == 200
    assert http("GET", f"{base}/bbb", token=pair["access_token"]) == (200, "bbb")
    status, renewed = http("GET", f"{base}/user/refresh?refresh_token={pair['refresh_token']}")
    assert status == 200
    assert http("GET", f"{base}/bbb", token=renewed["access_token"]) == (200, "bbb")
    # Malformed requests carrying tokens: aiohttp refuses them and logs why, not what.
    for raw in (
        f"GET /bbb HTTP/1.1\r\nAuthorization : Bearer {renewed['access_token']}\r\n\r\n",
        f"GET /user/refresh?refresh_token={renewed['refresh_token']}\xff HTTP/1.1\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", gateway_port), timeout=5) as sock:
            sock.sendall(raw.encode("latin-1"))
            assert sock.recv(100).split(b" ")[1] == b"400"

    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=20) == 0
    log = processes.output(server)
    assert "Traceback" not in log
    # Tokens never reach the logs (the refresh token travelled in a query string).
    for secret in (
        pair["access_token"],
        pair["refresh_token"],
        TEST_SECRET,
        "12345678",
        renewed["access_token"],
        renewed["refresh_token"],
    ):
        assert secret not in log
    assert "refused a malformed request from 127.0.0.1" in log


def test_serve_with_an_unreachable_database_says_so(workdir: Path, database_url: str) -> None:
    env = env_for(
        "mysql://root@127.0.0.1:1/gateway",
        JWT_SECRET=TEST_SECRET,
        GATEWAY_PORT=str(free_port()),
    )
    result = run_gateway(workdir, env, "serve")
    assert result.returncode == 1
    assert "error: cannot connect to MySQL database 'gateway' at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_to_start_without_a_secret(workdir: Path, database_url: str) -> None:
    result = run_gateway(workdir, env_for(database_url), "serve")
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


async def test_session_administration(workdir: Path, database_url: str) -> None:
    env = env_for(database_url)
    add = run_gateway(
        workdir, env, "user", "add", "alice", "--password-stdin", stdin="pass-word1\n"
    )
    assert add.returncode == 0, add.stderr
    store = create_store(database_url)
    await store.open()
    try:
        alice = await store.get_user_by_name("alice")
        assert alice is not None
        now = time.time()
        for sid in ("a" * 32, "b" * 32):
            await store.create_session(
                Session(
                    id=sid,
                    user_id=alice.id,
                    created_at=now,
                    last_used_at=now,
                    expires_at=now + 3600,
                    refresh_issued_at=int(now),
                    refresh_expires_at=int(now) + 600,
                    current_jti="c" * 32,
                ),
                password_hash=alice.password_hash,
            )
    finally:
        await store.close()

    listing = await asyncio.to_thread(run_gateway, workdir, env, "session", "list", "alice")
    assert listing.returncode == 0, listing.stderr
    assert [line.split()[-1] for line in listing.stdout.splitlines()[1:]] == ["active", "active"]

    passwd = await asyncio.to_thread(
        run_gateway,
        workdir,
        env,
        "user",
        "passwd",
        "alice",
        "--password-stdin",
        stdin="n3w-pass!\n",
    )
    assert "ended 2 session(s) of alice" in passwd.stdout
    listing = await asyncio.to_thread(run_gateway, workdir, env, "session", "list", "alice")
    assert listing.stdout.count("revoked (password changed)") == 2
    revoke = await asyncio.to_thread(run_gateway, workdir, env, "session", "revoke", "alice")
    assert "ended 0 session(s) of alice" in revoke.stdout
    prune = await asyncio.to_thread(run_gateway, workdir, env, "db", "prune")
    assert "pruned 0 expired or revoked session(s)" in prune.stdout  # access tokens may live
    delete = await asyncio.to_thread(run_gateway, workdir, env, "user", "delete", "alice")
    assert delete.returncode == 0 and "deleted user alice" in delete.stdout
    gone = await asyncio.to_thread(run_gateway, workdir, env, "session", "list", "alice")
    assert (gone.returncode, gone.stderr.strip()) == (1, "error: no user named 'alice'")


def test_demo_never_plants_its_user_in_a_database_with_users(
    workdir: Path, database_url: str, processes: Processes
) -> None:
    env = env_for(
        database_url, GATEWAY_PORT=str(free_port()), UPSTREAM_URL=f"http://127.0.0.1:{free_port()}"
    )
    add = run_gateway(
        workdir, env, "user", "add", "realuser", "--password-stdin", stdin="real-password\n"
    )
    assert add.returncode == 0, add.stderr
    demo = processes.start("demo", ["-m", "gateway", "demo"], workdir, env)
    wait_for_port(int(env["GATEWAY_PORT"]), demo)
    demo.send_signal(signal.SIGINT)
    assert demo.wait(timeout=20) == 0
    assert "not creating the demo user guang" in processes.output(demo)
    listing = run_gateway(workdir, env, "user", "list")
    assert "guang" not in listing.stdout
