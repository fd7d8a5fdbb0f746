"""Route rate limits against real processes: a burst of 100 concurrent requests against
`requests: 10` lets exactly 10 through, in one gateway process and across two sharing Redis;
the refused get 429 JSON with Retry-After and RateLimit-* headers; by user, each user has a
bucket of their own."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.support.errors import error_body
from tests.support.gateways import TEST_SECRET, Gateway, GatewayFactory, route
from tests.support.processes import Processes, free_port, start_gateway_process
from tests.support.upstreams import DemoTargets

REDIS_URL = "redis://127.0.0.1:6379/11"


def serve(
    processes: Processes, tmp_path: Path, upstream: str, *, redis_url: str = "", name: str
) -> str:
    port = free_port()
    config: dict[str, Any] = {
        "server": {"port": port},
        "database": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "tokens": {"secret": TEST_SECRET},
        "rate_limits": {"redis_url": redis_url},
        "upstreams": {"demo": {"url": upstream}},
        "routes": [
            route(
                "/aaa",
                "public",
                name=f"aaa-{uuid.uuid4().hex}",
                rate_limit={"requests": 10, "per": "1m", "by": "address"},
            ),
            route("/bbb", "public"),
        ],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "GATEWAY_PORT": str(port)}
    _, base = start_gateway_process(processes, tmp_path, env, "--config", str(path), name=name)
    return base


async def burst(urls: list[str], count: int = 100) -> list[tuple[int, dict[str, str], Any]]:
    async with aiohttp.ClientSession() as http:

        async def one(url: str) -> tuple[int, dict[str, str], Any]:
            async with http.get(url) as resp:
                body = await resp.json() if resp.status == 429 else await resp.text()
                return resp.status, dict(resp.headers), body

        return await asyncio.gather(*(one(urls[i % len(urls)]) for i in range(count)))


async def test_a_burst_of_100_against_10_lets_exactly_10_through(
    processes: Processes, tmp_path: Path
) -> None:
    demo = DemoTargets(processes, tmp_path).start("demo")
    base = serve(processes, tmp_path, demo, name="gateway")
    answers = await burst([f"{base}/aaa"])
    statuses = [status for status, _, _ in answers]
    assert (statuses.count(200), statuses.count(429)) == (10, 90)
    for status, headers, body in answers:
        if status != 429:
            continue
        assert body == error_body(429, "Too Many Requests", body["message"])
        assert body["message"].startswith("Too many requests to this route; try again in ")
        # 10 a minute: the next request is allowed 6 s after the burst filled the bucket,
        # less the time the burst itself took (well under a second), rounded up.
        assert int(headers["Retry-After"]) in (5, 6)
        assert headers["RateLimit-Limit"] == "10" and headers["RateLimit-Remaining"] == "0"
        assert 50 <= int(headers["RateLimit-Reset"]) <= 60
        assert headers["RateLimit-Policy"] == "10;w=60"
    # Another route, and the limited one's own next turn, are not affected by the burst.
    assert [s for s, _, _ in await burst([f"{base}/bbb"], 20)] == [200] * 20


@pytest.mark.redis
async def test_two_processes_sharing_redis_let_exactly_10_through_together(
    processes: Processes, tmp_path: Path
) -> None:
    demo = DemoTargets(processes, tmp_path).start("demo")
    config_name = "shared"
    first = serve(processes, tmp_path, demo, redis_url=REDIS_URL, name=config_name)
    # The second process reads the same file: the same route name, so the same buckets.
    port = free_port()
    env = {**os.environ, "GATEWAY_PORT": str(port)}
    config_file = tmp_path / f"{config_name}.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["server"]["port"] = port
    second_file = tmp_path / "second.yaml"
    second_file.write_text(yaml.safe_dump(config))
    _, second = start_gateway_process(
        processes, tmp_path, env, "--config", str(second_file), name="second"
    )
    answers = await burst([f"{first}/aaa", f"{second}/aaa"])
    statuses = [status for status, _, _ in answers]
    assert (statuses.count(200), statuses.count(429)) == (10, 90)


async def test_by_user_each_user_has_a_bucket_of_their_own(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(
        routes=[route("/whoami", "optional", rate_limit={"requests": 3, "per": "1h", "by": "user"})]
    )
    await gw.add_user("ann", "password-a")
    await gw.add_user("bob", "password-b")
    tokens = {
        name: (await gw.login(name, password))["access_token"]
        for name, password in (("ann", "password-a"), ("bob", "password-b"))
    }

    async def statuses(headers: dict[str, str]) -> list[int]:
        return [(await gw.client.get("/whoami", headers=headers)).status for _ in range(4)]

    for token in tokens.values():
        assert await statuses({"Authorization": f"Bearer {token}"}) == [200, 200, 200, 429]
    # Anonymous callers of a by-user route share their address's bucket.
    assert await statuses({}) == [200, 200, 200, 429]
