"""Soak: mixed traffic at high concurrency against real gateway and upstream processes.

    .venv/bin/python bench/soak.py [--seconds 600] [--concurrency 64]
                                   [--database-url mysql://root@127.0.0.1:3306/gw_soak]

Each worker logs in, then loops over a mix: protected and public requests, refreshes (rotating its
session), bad tokens, bad logins, unknown paths. It checks that no answer is a 5xx, every good
request succeeded, every bad one was refused, no session was forked or revoked, and that the
gateway's RSS and open file descriptors stay flat. Prints the numbers; exits 1 on a violation.
tests/test_soak.py runs the same soak for about a minute in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from harness import REPO, free_port, open_fds, rss_mib, wait_for

PASSWORD = "soak-password"  # noqa: S105 - a throwaway test user's


@dataclass
class Report:
    requests: int = 0
    seconds: float = 0.0
    good_ok: int = 0
    good_failed: Counter[str] = field(default_factory=Counter)
    bad_refused: int = 0
    bad_accepted: Counter[str] = field(default_factory=Counter)
    server_errors: Counter[str] = field(default_factory=Counter)
    broken_families: int = 0
    rss_mib: list[float] = field(default_factory=list)
    # The gateway's own: not the connections its clients hold open (their pool follows latency).
    fds: list[int] = field(default_factory=list)

    def violations(self) -> list[str]:
        problems = []
        if self.server_errors:
            problems.append(f"5xx answers: {dict(self.server_errors)}")
        if self.good_failed:
            problems.append(f"good requests that failed: {dict(self.good_failed)}")
        if self.bad_accepted:
            problems.append(f"bad requests that were let through: {dict(self.bad_accepted)}")
        if self.broken_families:
            problems.append(f"{self.broken_families} sessions forked or lost")
        if len(self.rss_mib) > 4:
            settled = self.rss_mib[len(self.rss_mib) // 4]
            if max(self.rss_mib[len(self.rss_mib) // 4 :]) > settled * 1.10 + 8:
                problems.append(f"RSS grew: {settled:.1f} -> {max(self.rss_mib):.1f} MiB")
            if self.fds[-1] > self.fds[len(self.fds) // 4] + 8:
                problems.append(f"fds grew: {self.fds[len(self.fds) // 4]} -> {self.fds[-1]}")
        return problems

    def summary(self) -> str:
        quarter = len(self.rss_mib) // 4
        return "\n".join(
            [
                (
                    f"requests          {self.requests} in {self.seconds:.0f}s "
                    f"({self.requests / max(self.seconds, 1e-9):,.0f}/s)"
                ),
                f"good ok           {self.good_ok}",
                f"bad refused       {self.bad_refused}",
                f"good failed       {dict(self.good_failed) or 0}",
                f"bad accepted      {dict(self.bad_accepted) or 0}",
                f"5xx               {dict(self.server_errors) or 0}",
                f"families broken   {self.broken_families}",
                f"gateway RSS MiB   after warm-up {self.rss_mib[quarter]:.1f}, "
                f"max {max(self.rss_mib):.1f}, end {self.rss_mib[-1]:.1f}"
                if self.rss_mib
                else "gateway RSS MiB   (not sampled)",
                f"gateway fds       after warm-up {self.fds[quarter]}, end {self.fds[-1]}"
                if self.fds
                else "gateway fds       (not sampled)",
            ]
        )


def _random_address() -> str:
    return f"198.18.{random.randrange(256)}.{random.randrange(1, 255)}"  # noqa: S311


async def soak(
    base: str, gateway_pid: int, *, seconds: float, concurrency: int, username: str
) -> Report:
    """Run the traffic mix against a gateway whose `username` has PASSWORD."""
    report = Report()
    stop_at = time.monotonic() + seconds
    port = int(base.rsplit(":", 1)[1].split("/")[0])
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def call(
            kind: str, good: bool, method: str, path: str, expect: int, **kwargs: object
        ) -> dict[str, object] | None:
            async with http.request(method, base + path, **kwargs) as resp:  # type: ignore[arg-type]
                body = await resp.read()
                report.requests += 1
                if resp.status >= 500:
                    report.server_errors[f"{kind} {resp.status}"] += 1
                if good:
                    if resp.status == expect:
                        report.good_ok += 1
                    else:
                        report.good_failed[f"{kind} {resp.status}"] += 1
                elif resp.status == expect or resp.status in (400, 401, 404, 429):
                    report.bad_refused += 1
                else:
                    report.bad_accepted[f"{kind} {resp.status}"] += 1
                if resp.status == 200 and resp.content_type == "application/json":
                    parsed: dict[str, object] = json.loads(body)
                    return parsed
                return None

        # The login limiter counts an attempt from its start, so one user's logins in flight
        # from one address count against per_user_and_address until they succeed: a real
        # client logs in a few at a time, not `concurrency` at once.
        logins_at_once = asyncio.Semaphore(4)

        async def login() -> dict[str, object]:
            async with logins_at_once:
                pair = await call(
                    "login",
                    True,
                    "POST",
                    "/user/login",
                    200,
                    json={"username": username, "password": PASSWORD},
                )
            if pair is None:
                raise RuntimeError("the soak user could not log in")
            return pair

        async def worker() -> str:
            pair = await login()
            while time.monotonic() < stop_at:
                roll = random.random()  # noqa: S311
                bearer = {"Authorization": f"Bearer {pair['access_token']}"}
                if roll < 0.40:
                    await call("protected", True, "GET", "/bbb", 200, headers=bearer)
                elif roll < 0.60:
                    await call("public", True, "GET", "/aaa", 200)
                elif roll < 0.70:
                    renewed = await call(
                        "refresh",
                        True,
                        "POST",
                        "/user/refresh",
                        200,
                        json={"refresh_token": pair["refresh_token"]},
                    )
                    if renewed is not None:
                        pair = renewed
                elif roll < 0.78:
                    forged = str(pair["access_token"])[:-4] + "AAAA"
                    await call(
                        "bad token",
                        False,
                        "GET",
                        "/bbb",
                        401,
                        headers={"Authorization": f"Bearer {forged}"},
                    )
                elif roll < 0.84:
                    await call("no token", False, "GET", "/bbb", 401)
                elif roll < 0.88:
                    await login()  # a second session of the same user
                elif roll < 0.94:
                    await call(
                        "bad login",
                        False,
                        "POST",
                        "/user/login",
                        401,
                        json={"username": username, "password": "wrong"},
                        headers={"X-Forwarded-For": _random_address()},
                    )
                else:
                    await call("unknown path", False, "GET", f"/nope/{roll}", 404)
            return str(pair["refresh_token"])

        async def sample() -> None:
            while time.monotonic() < stop_at:
                report.rss_mib.append(rss_mib(gateway_pid))
                report.fds.append(open_fds(gateway_pid, but_clients_of=port))
                await asyncio.sleep(1.0)

        started = time.monotonic()
        sampler = asyncio.create_task(sample())
        finals = await asyncio.gather(*(worker() for _ in range(concurrency)))
        await sampler
        report.seconds = time.monotonic() - started
        # Every family survived: each worker's newest refresh token still rotates.
        for token in finals:
            async with http.post(f"{base}/user/refresh", json={"refresh_token": token}) as resp:
                if resp.status != 200:
                    report.broken_families += 1
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="gw-soak-"))
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    upstream_port, gateway_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url or f"sqlite:///{workdir / 'soak.db'}",
        "JWT_SECRET": secrets.token_urlsafe(48),
        "UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}",
        "GATEWAY_PORT": str(gateway_port),
        "TRUSTED_PROXIES": "127.0.0.1",
        "LOG_LEVEL": "warning",
    }
    gateway = [sys.executable, "-m", "gateway"]
    subprocess.run(
        [*gateway, "db", "init"], cwd=workdir, env=env, check=True, stdout=subprocess.DEVNULL
    )
    subprocess.run(
        [*gateway, "user", "add", "soak", "--password-stdin"],
        cwd=workdir,
        env=env,
        input=f"{PASSWORD}\n".encode(),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    upstream = subprocess.Popen(
        [sys.executable, "-m", "upstream_demo", "--port", str(upstream_port)],
        stdout=subprocess.DEVNULL,
    )
    server = subprocess.Popen([*gateway, "serve"], cwd=workdir, env=env)
    try:
        wait_for(upstream_port)
        wait_for(gateway_port)
        report = asyncio.run(
            soak(
                f"http://127.0.0.1:{gateway_port}",
                server.pid,
                seconds=args.seconds,
                concurrency=args.concurrency,
                username="soak",
            )
        )
    finally:
        for proc in (server, upstream):
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    print(report.summary())
    problems = report.violations()
    for problem in problems:
        print("VIOLATION:", problem)
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
