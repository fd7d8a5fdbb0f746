"""Running it like production: health, readiness, metrics, JSON logs, reload, drain, workers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import create_metrics_app
from gateway.appkeys import STORE
from tests.support.gateways import TEST_SECRET, Gateway, GatewayFactory, bearer_of, route
from tests.support.processes import (
    Processes,
    add_user_by_cli,
    free_port,
    start_gateway_process,
)
from tests.support.upstreams import slow_path_app
from tests.support.wire import http, raw_get

# --- health -----------------------------------------------------------------------------------


async def test_health_and_readiness(gateway: Gateway) -> None:
    health = await gateway.client.get("/healthz", headers={"Authorization": "Bearer garbage"})
    assert (health.status, await health.json()) == (200, {"status": "ok"})
    ready = await gateway.client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"]["database"] == "ok"


async def test_readiness_reports_a_lost_database(gateway: Gateway) -> None:
    await gateway.app[STORE].close()  # the connection is gone, as when the database dies
    ready = await gateway.client.get("/readyz")
    assert ready.status == 503
    assert ready.headers["Retry-After"] == "5"
    body = await ready.json()
    assert (body["status"], body["checks"]["database"]) == ("unavailable", "unavailable")
    assert (await gateway.client.get("/healthz")).status == 200  # alive, just not ready


async def test_health_paths_cannot_be_shadowed_by_routes() -> None:
    from gateway.config import parse_config
    from gateway.errors import ConfigError

    for path in ("/healthz", "/readyz", "/metrics"):
        with pytest.raises(ConfigError):
            parse_config(
                {
                    "tokens": {"secret": TEST_SECRET},
                    "upstreams": {"u": {"url": "http://h"}},
                    "routes": [{"path": path, "upstream": "u", "auth": "public"}],
                },
                environ={},
            )


# --- metrics ----------------------------------------------------------------------------------


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample, 0 when absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_what_happened(gateway: Gateway) -> None:
    client = gateway.client
    pair = await gateway.login()
    await client.post("/user/login", json={"username": "guang", "password": "wrong"})
    await client.get("/bbb")
    await client.get("/bbb", headers={"Authorization": "Bearer garbage"})
    await client.get("/bbb", headers=bearer_of(pair))
    await client.post("/user/refresh", json={"refresh_token": pair["refresh_token"]})
    for i in range(30):  # random paths must not create series
        await client.get(f"/nowhere/{i}")
    text = await (await client.get("/metrics")).text()

    bbb = "/bbb GET,HEAD"  # the default name of an unnamed route: its path and methods
    assert sample(text, "gateway_requests_total", route=bbb, method="GET", status="401") == 2
    assert sample(text, "gateway_requests_total", route=bbb, method="GET", status="200") == 1
    assert sample(text, "gateway_requests_total", route="unmatched", status="404") == 30
    assert sample(text, "gateway_logins_total", outcome="success") == 1
    assert sample(text, "gateway_logins_total", outcome="invalid_credentials") == 1
    assert sample(text, "gateway_refreshes_total", outcome="rotated") == 1
    assert sample(text, "gateway_token_rejections_total", reason="missing") == 1
    assert sample(text, "gateway_token_rejections_total", reason="invalid") == 1
    assert sample(text, "gateway_upstream_response_seconds_count", upstream="demo") >= 1
    assert sample(text, "gateway_processing_seconds_count") >= 1
    assert "gateway_requests_in_flight" in text
    assert "/nowhere" not in text


async def test_upstream_errors_are_counted_by_kind(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(upstream_url=f"http://127.0.0.1:{free_port()}")
    await gw.client.get("/aaa")
    text = await (await gw.client.get("/metrics")).text()
    assert sample(text, "gateway_upstream_errors_total", upstream="demo", kind="connect") == 1


async def test_metrics_on_their_own_port(
    start_gateway: GatewayFactory, aiohttp_server: Callable[..., Any]
) -> None:
    gw: Gateway = await start_gateway(metrics={"port": 9999})
    assert (await gw.client.get("/metrics")).status == 404  # not on the public port
    metrics_server: TestServer = await aiohttp_server(create_metrics_app(gw.app))
    await gw.client.get("/aaa")
    async with aiohttp.ClientSession() as session:
        async with session.get(metrics_server.make_url("/metrics")) as resp:
            assert resp.status == 200
            assert sample(await resp.text(), "gateway_requests_total", route="/aaa GET,HEAD") == 1


async def test_metrics_restricted_to_networks(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(metrics={"allowed_networks": ["10.0.0.0/8"]})
    assert (await gw.client.get("/metrics")).status == 403


# --- a real process: logs, reload, drain ------------------------------------------------------


def write_config(
    path: Path,
    port: int,
    database: str,
    routes: list[dict[str, Any]],
    upstream_url: str,
    **extra: Any,
) -> None:
    config = {
        "server": {"port": port, "shutdown_timeout": "10s"},
        "database": {"url": database},
        "tokens": {"secret": TEST_SECRET},
        "upstreams": {"demo": {"url": upstream_url}},
        "routes": routes,
        **extra,
    }
    path.write_text(yaml.safe_dump(config))


def serve(
    tmp_path: Path,
    processes: Processes,
    upstream: TestServer,
    routes: list[dict[str, Any]],
    *args: str,
    **extra: Any,
) -> tuple[subprocess.Popen[bytes], str]:
    """`gateway serve` as a process on a free port: `routes` to `upstream`, SQLite in tmp_path,
    `extra` config sections, `args` on the command line."""
    port = free_port()
    write_config(
        tmp_path / "config.yaml",
        port,
        f"sqlite:///{tmp_path / 'gw.db'}",
        routes,
        str(upstream.make_url("/")),
        **extra,
    )
    env = {**os.environ, "GATEWAY_PORT": str(port)}
    return start_gateway_process(processes, tmp_path, env, *args)


@pytest.fixture
async def slow_upstream(aiohttp_server: Callable[..., Any]) -> TestServer:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "1.5")))
        return web.Response(text="slow done")

    server: TestServer = await aiohttp_server(slow_path_app(slow))
    return server


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    # In a thread: the test's upstream runs on this event loop and must keep answering.
    return await asyncio.to_thread(raw_get, url, headers)


def background_get(url: str) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def fetch() -> None:
        result["status"], _, result["body"] = raw_get(url)

    thread = threading.Thread(target=fetch)
    thread.start()
    return thread, result


async def test_json_access_log_lines(
    tmp_path: Path, processes: Processes, slow_upstream: TestServer
) -> None:
    port = free_port()
    write_config(
        tmp_path / "config.yaml",
        port,
        f"sqlite:///{tmp_path / 'gw.db'}",
        [route("/bbb", name="bbb")],
        str(slow_upstream.make_url("/")),
    )
    env = {**os.environ, "GATEWAY_PORT": str(port)}
    add_user_by_cli(tmp_path, env, "guang", "12345678")
    proc, base = start_gateway_process(processes, tmp_path, env)
    _, pair = await asyncio.to_thread(
        http, "POST", f"{base}/user/login", {"username": "guang", "password": "12345678"}
    )
    await get(
        f"{base}/bbb",
        {"Authorization": f"Bearer {pair['access_token']}", "X-Request-ID": "log-me-1"},
    )
    await get(f"{base}/user/refresh?refresh_token={pair['refresh_token']}")
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0
    lines = [json.loads(line) for line in processes.output(proc).splitlines() if line]
    [access] = [e for e in lines if e.get("request_id") == "log-me-1"]
    assert access["route"] == "bbb" and access["status"] == 200 and access["user_id"] == "1"
    assert access["upstream"] == "demo" and access["method"] == "GET" and access["path"] == "/bbb"
    assert access["client"] == "127.0.0.1" and access["duration_ms"] >= 0
    assert {"time", "level", "logger", "message"} <= set(access)
    text = processes.output(proc)
    for secret in (pair["access_token"], pair["refresh_token"], TEST_SECRET, "12345678"):
        assert secret not in text


async def test_sighup_reloads_routes_and_keeps_in_flight_requests(
    tmp_path: Path, processes: Processes, slow_upstream: TestServer
) -> None:
    port, config_path = free_port(), tmp_path / "config.yaml"
    database, upstream = f"sqlite:///{tmp_path / 'gw.db'}", str(slow_upstream.make_url("/"))
    write_config(
        config_path,
        port,
        database,
        [
            route("/slow", "public"),
            route("/old", "public"),
        ],
        upstream,
    )
    proc, base = start_gateway_process(
        processes, tmp_path, {**os.environ, "GATEWAY_PORT": str(port)}
    )
    assert (await get(f"{base}/old"))[0] == 200
    assert (await get(f"{base}/new"))[0] == 404

    thread, in_flight = background_get(f"{base}/slow?s=1.5")
    await asyncio.sleep(0.4)  # the slow request is now inside the old runtime
    write_config(
        config_path,
        port,
        database,
        [route("/new", "public")],
        upstream,
    )
    proc.send_signal(signal.SIGHUP)
    for _ in range(50):
        if (await get(f"{base}/new"))[0] == 200:
            break
        await asyncio.sleep(0.1)
    assert (await get(f"{base}/new"))[0] == 200
    assert (await get(f"{base}/old"))[0] == 404
    await asyncio.to_thread(thread.join, 10)
    assert (in_flight["status"], in_flight["body"]) == (200, b"slow done")

    config_path.write_text("routes: [this is: not valid")
    proc.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.5)
    assert (await get(f"{base}/new"))[0] == 200  # the old config stays in force
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0
    log = processes.output(proc)
    assert "config reloaded: 1 routes, 1 upstreams" in log
    assert "config reload refused, keeping the running config" in log


async def test_sigterm_drains_requests_in_flight(
    tmp_path: Path, processes: Processes, slow_upstream: TestServer
) -> None:
    routes = [route("/slow", "public")]
    proc, base = serve(tmp_path, processes, slow_upstream, routes)
    thread, in_flight = background_get(f"{base}/slow?s=2")
    await asyncio.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(thread.join, 15)
    assert (in_flight["status"], in_flight["body"]) == (200, b"slow done")
    assert await asyncio.to_thread(proc.wait, 15) == 0
    with pytest.raises(OSError):
        await get(f"{base}/slow?s=0")


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


async def test_workers_share_one_port(
    tmp_path: Path, processes: Processes, slow_upstream: TestServer
) -> None:
    proc, base = serve(
        tmp_path,
        processes,
        slow_upstream,
        [route("/**", "public")],
        "--workers",
        "2",
    )
    await asyncio.sleep(1.0)  # let the second worker bind too
    workers = children_of(proc.pid)
    assert len(workers) == 2, workers
    # No Redis: each worker counts failed logins and route requests on its own, so say so.
    assert "2 workers without rate_limits.redis_url" in processes.output(proc)
    assert [(await get(f"{base}/hello/{i}"))[0] for i in range(20)] == [200] * 20
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0
    assert not any(alive(pid) for pid in workers)


async def test_metrics_default_to_loopback_and_private_networks(
    start_gateway: GatewayFactory,
) -> None:
    # Behind a trusted proxy the client's own address counts: a public one is refused.
    gw: Gateway = await start_gateway(server={"trusted_proxies": ["127.0.0.0/8"]})
    assert (await gw.client.get("/metrics")).status == 200  # loopback
    for outside in ("203.0.113.5", "2001:db8::1"):
        refused = await gw.client.get("/metrics", headers={"X-Forwarded-For": outside})
        assert refused.status == 403
        assert (await refused.json())["message"] == "Metrics are not available to this address"
    for inside in ("10.1.2.3", "192.168.0.9", "172.20.0.1", "fd00::1"):
        allowed = await gw.client.get("/metrics", headers={"X-Forwarded-For": inside})
        assert allowed.status == 200, inside
    anyone: Gateway = await start_gateway(
        server={"trusted_proxies": ["127.0.0.0/8"]},
        metrics={"allowed_networks": ["0.0.0.0/0", "::/0"]},
    )
    public = await anyone.client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.5"})
    assert public.status == 200
