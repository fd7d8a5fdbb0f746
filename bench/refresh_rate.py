"""Refreshes per second through a real gateway process on a real database.

    .venv/bin/python bench/refresh_rate.py [--database-url mysql://root@127.0.0.1:3306/gw_bench]
                                           [--seconds 10] [--concurrency 32]

Starts `gateway serve` (and nothing else: refresh needs no upstream), logs in one session per
worker, then each worker refreshes its own session in a loop with the newest refresh token.
Prints refreshes/s, latency percentiles and the gateway's CPU time per refresh. The load is
generated in Python (aiohttp), so on a 2-core machine the client competes with the gateway:
read the CPU-per-refresh column as the gateway's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp
import pymysql
from harness import REPO, free_port
from load import PASSWORD, USERNAME, drive_refreshes
from yarl import URL


def reset_mysql_database(url: str) -> None:
    parsed = URL(url)
    conn = pymysql.connect(
        host=parsed.host,
        port=parsed.port or 3306,
        user=parsed.user or "root",
        password=parsed.password or "",
        autocommit=True,
    )
    with conn.cursor() as cur:
        name = parsed.path.strip("/")
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    conn.close()


def start_gateway(database_url: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """Initialize the database, add the bench user, start `gateway serve`; return it."""
    if database_url.startswith("mysql"):
        reset_mysql_database(database_url)
    else:
        Path(URL(database_url).path[1:]).unlink(missing_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GATEWAY_PORT": str(port),
        "JWT_SECRET": secrets.token_urlsafe(48),
    }
    gateway = [sys.executable, "-m", "gateway"]
    quiet = ["--log-level", "warning"]
    subprocess.run(
        [*gateway, "db", "init", *quiet],
        cwd=workdir,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [*gateway, "user", "add", USERNAME, "--password-stdin", *quiet],
        cwd=workdir,
        env=env,
        input=f"{PASSWORD}\n".encode(),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    server = subprocess.Popen([*gateway, "serve", *quiet], cwd=workdir, env=env)
    return server, f"http://127.0.0.1:{port}", workdir


async def measure(base: str, pid: int, seconds: float, concurrency: int) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(100):  # wait until the gateway answers
            try:
                await http.get(f"{base}/healthz")
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    sample = await drive_refreshes(base, pid, seconds, concurrency)
    print(f"concurrency       {concurrency}")
    print(f"refreshes         {sample.requests}, {sample.wrong} failed")
    print(f"refreshes/s       {sample.rps:,.0f}")
    print(f"latency p50/p99   {sample.p50_ms:.1f} ms / {sample.p99_ms:.1f} ms")
    print(f"gateway CPU       {sample.cpu_us or 0:,.0f} µs per refresh")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--database-url", default="mysql://root@127.0.0.1:3306/gw_bench")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    server, base, workdir = start_gateway(args.database_url)
    try:
        print(f"database          {URL(args.database_url).scheme}")
        asyncio.run(measure(base, server.pid, args.seconds, args.concurrency))
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
