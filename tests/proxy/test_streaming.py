"""Large bodies stream through a real gateway process with bounded memory, both ways."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from tests.support.gateways import TEST_SECRET
from tests.support.processes import Processes, free_port, wait_for_port

GIB = 1024**3
BLOCK = os.urandom(1024 * 1024)
# The bound: a few tens of MiB whatever the body size.
RSS_GROWTH_LIMIT = 48 * 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """Samples a process's RSS every few milliseconds while a transfer runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def expected_digest(size: int) -> str:
    digest = hashlib.sha256()
    for _ in range(size // len(BLOCK)):
        digest.update(BLOCK)
    return digest.hexdigest()


async def test_one_gib_up_and_down_with_bounded_gateway_memory(
    tmp_path: Path, processes: Processes, aiohttp_server: Callable[..., Any]
) -> None:
    async def sink(request: web.Request) -> web.Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"size": size, "sha256": digest.hexdigest()})

    async def source(request: web.Request) -> web.StreamResponse:
        size = int(request.query["bytes"])
        response = web.StreamResponse(headers={"Content-Length": str(size)})
        await response.prepare(request)
        for _ in range(size // len(BLOCK)):
            await response.write(BLOCK)
        await response.write_eof()
        return response

    app = web.Application(client_max_size=0)
    app.router.add_post("/big/sink", sink)
    app.router.add_get("/big/source", source)
    upstream = await aiohttp_server(app)

    port = free_port()
    config = {
        "server": {"port": port},
        "database": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "tokens": {"secret": TEST_SECRET},
        "upstreams": {"up": {"url": str(upstream.make_url("/"))}},
        "routes": [{"path": "/big/**", "upstream": "up", "auth": "public", "max_body_size": 0}],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    gateway = processes.start(
        "gateway", ["-m", "gateway", "serve", "--log-level", "warning"], tmp_path, dict(os.environ)
    )
    wait_for_port(port, gateway)
    base = f"http://127.0.0.1:{port}"

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
        for _ in range(20):  # warm up: pools, imports, buffers
            async with http.get(f"{base}/big/source?bytes={len(BLOCK)}") as r:
                await r.read()
        baseline = rss_bytes(gateway.pid)

        async def upload_body() -> AsyncIterator[bytes]:
            for _ in range(GIB // len(BLOCK)):
                yield BLOCK

        with PeakRss(gateway.pid) as upload_peak:
            async with http.post(
                f"{base}/big/sink", data=upload_body(), headers={"Content-Length": str(GIB)}
            ) as r:
                uploaded = await r.json()
        assert uploaded == {"size": GIB, "sha256": expected_digest(GIB)}

        with PeakRss(gateway.pid) as download_peak:
            digest, size = hashlib.sha256(), 0
            async with http.get(f"{base}/big/source?bytes={GIB}") as r:
                assert r.status == 200
                async for chunk in r.content.iter_any():
                    digest.update(chunk)
                    size += len(chunk)
        assert (size, digest.hexdigest()) == (GIB, expected_digest(GIB))

    growth_up, growth_down = upload_peak.peak - baseline, download_peak.peak - baseline
    print(
        f"gateway RSS baseline {baseline / 2**20:.1f} MiB, growth during 1 GiB upload "
        f"{growth_up / 2**20:.1f} MiB, download {growth_down / 2**20:.1f} MiB"
    )
    assert growth_up < RSS_GROWTH_LIMIT, growth_up
    assert growth_down < RSS_GROWTH_LIMIT, growth_down
