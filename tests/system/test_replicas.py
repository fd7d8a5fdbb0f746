"""Two gateway processes on one MariaDB database and one Redis behave as one gateway."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
import redis

from tests.support.processes import (
    Deployment,
    Processes,
    free_port,
)
from tests.support.services import MySqlDatabase
from tests.support.wire import http, raw_get

pytestmark = [pytest.mark.mysql, pytest.mark.redis]

PASSWORD = "replica-pass"


def two_replicas(
    processes: Processes, tmp_path: Path, mysql_database: MySqlDatabase, **env: str
) -> tuple[str, list[str]]:
    """The shipped config on the test's database and `env`, a fresh user (fresh rate-limit
    counters in the shared Redis) with PASSWORD, the demo upstream, and two gateways on it:
    the user's name and the two base URLs."""
    deployment = Deployment.create(processes, tmp_path, database_url=mysql_database.url, **env)
    user = f"r{uuid.uuid4().hex[:10]}"
    deployment.add_user(user, PASSWORD)
    deployment.start_upstream()
    return user, [deployment.start_gateway(name=n, port=free_port())[1] for n in ("a", "b")]


def test_two_replicas_share_sessions_and_limits(
    tmp_path: Path, processes: Processes, mysql_database: MySqlDatabase
) -> None:
    user, (a, b) = two_replicas(
        processes,
        tmp_path,
        mysql_database,
        REDIS_URL="redis://127.0.0.1:6379/0",
        REFRESH_REUSE_GRACE="1s",
        LOGIN_MAX_FAILURES="3",
    )

    def login(base: str, password: str = PASSWORD) -> tuple[int, dict[str, str]]:
        return http("POST", f"{base}/user/login", {"username": user, "password": password})

    def refresh(base: str, token: str) -> tuple[int, dict[str, str]]:
        return http("POST", f"{base}/user/refresh", {"refresh_token": token})

    def bbb(base: str, access: str) -> int:
        return raw_get(f"{base}/bbb", {"Authorization": f"Bearer {access}"})[0]

    # Login on one, use and rotate on the other.
    status, first = login(a)
    assert status == 200
    assert bbb(b, first["access_token"]) == 200
    status, second = refresh(b, first["refresh_token"])
    assert status == 200
    status, third = refresh(a, second["refresh_token"])
    assert status == 200

    # Reuse of a retired token on either replica revokes the session everywhere.
    time.sleep(1.2)  # past the grace window
    status, body = refresh(a, first["refresh_token"])
    assert (status, body["message"]) == (
        401,
        "Refresh token was already used; the session has been revoked",
    )
    assert refresh(b, third["refresh_token"])[0] == 401

    # Logout on one: the other rejects the access token within the revocation poll.
    status, pair = login(b)
    assert status == 200
    assert bbb(a, pair["access_token"]) == 200
    assert http("POST", f"{a}/user/logout", {"refresh_token": pair["refresh_token"]})[0] == 200
    assert refresh(b, pair["refresh_token"])[0] == 401
    deadline = time.monotonic() + 10
    while bbb(b, pair["access_token"]) == 200:
        assert time.monotonic() < deadline, "replica b never saw the logout"
        time.sleep(0.1)

    # Failed logins count across replicas.
    assert login(a, "wrong")[0] == 401
    assert login(b, "wrong")[0] == 401
    assert login(a, "wrong")[0] == 401
    assert login(b)[0] == 429
    assert login(a)[0] == 429


def test_a_burst_split_over_two_replicas_gets_no_more_verdicts_than_the_limit(
    tmp_path: Path, processes: Processes, mysql_database: MySqlDatabase
) -> None:
    # A Redis db of this test's own: the per-address counter of 127.0.0.1 is reset first, so
    # earlier runs (within the window) cannot have used it up.
    redis_url = "redis://127.0.0.1:6379/13"
    redis.Redis.from_url(redis_url).delete("gw:login:a:127.0.0.1")
    limit = 10
    user, bases = two_replicas(
        processes, tmp_path, mysql_database, REDIS_URL=redis_url, LOGIN_MAX_FAILURES=str(limit)
    )

    async def burst() -> list[int]:
        passwords = ["wrong"] * 300
        passwords[150] = PASSWORD
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def one(i: int, password: str) -> int:
                body = {"username": user, "password": password}
                async with http.post(f"{bases[i % 2]}/user/login", json=body) as resp:
                    return resp.status

            return await asyncio.gather(*(one(i, p) for i, p in enumerate(passwords)))

    statuses = asyncio.run(burst())
    verdicts = [s for s in statuses if s in (200, 401)]
    assert len(verdicts) == limit, sorted(set(statuses))
    assert 200 not in statuses
    assert set(statuses) <= {401, 429}
