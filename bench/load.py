"""The load the rows put on a server, and what one measurement of it yields (a Sample).

HTTP rows are driven by wrk (C, one thread, so the client costs little next to the server). Login
and refresh rows are driven by an aiohttp client: they are bound by the database and by argon2, not
by the load generator. CPU is utime+stime of the measured server's process tree over the run
divided by the requests it answered.

    .venv/bin/python bench/load.py storm BASE_URL SECONDS   # logins for SECONDS (login_storm)
"""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from harness import cpu_seconds

__all__ = [
    "PASSWORD",
    "PROXYING_USERNAME",
    "USERNAME",
    "Sample",
    "drive_logins",
    "drive_refreshes",
    "login",
    "login_storm",
    "run_wrk",
]

USERNAME = "bench"
# The proxying rows' token is another user's: the login and refresh rows open sessions by the
# hundred, and past sessions.max_per_user each login ends the user's oldest session.
PROXYING_USERNAME = "bench-proxying"
PASSWORD = "bench-password"  # noqa: S105 - a throwaway bench user's


@dataclass(frozen=True)
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None
    requests: int = 0
    # Answers other than the row's expected status, and wrk's socket errors (connect, read,
    # write, timeout): a row with either measured something else than it says.
    wrong: int = 0


def _to_ms(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    if match is None:
        raise ValueError(f"unexpected wrk latency {value!r}")
    return float(match.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]


def _find(pattern: str, output: str) -> str:
    match = re.search(pattern, output, re.M)
    if match is None:
        raise ValueError(f"wrk printed no {pattern!r}:\n{output}")
    return match.group(1)


def parse_wrk(output: str, *, expect_2xx: bool) -> tuple[float, float, float, int, int]:
    """req/s, p50 ms, p99 ms, requests, wrong answers from `wrk --latency` output."""
    total = int(_find(r"(\d+) requests in", output))
    non_2xx_match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    non_2xx = int(non_2xx_match.group(1)) if non_2xx_match else 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = sum(int(n) for n in socket_errors.groups()) if socket_errors else 0
    wrong = (non_2xx if expect_2xx else total - non_2xx) + errors
    return (
        float(_find(r"Requests/sec:\s+([\d.]+)", output)),
        _to_ms(_find(r"^\s+50%\s+(\S+)", output)),
        _to_ms(_find(r"^\s+99%\s+(\S+)", output)),
        total,
        wrong,
    )


def run_wrk(
    url: str,
    *,
    seconds: float,
    connections: int,
    pid: int | None,
    headers: dict[str, str] | None = None,
    expect_2xx: bool = True,
) -> Sample:
    """wrk -t1 against url; CPU per request of pid's process tree when pid is given."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    before = cpu_seconds(pid) if pid else 0.0
    result = subprocess.run([*argv, url], capture_output=True, text=True, check=True)
    after = cpu_seconds(pid) if pid else 0.0
    rps, p50, p99, total, wrong = parse_wrk(result.stdout, expect_2xx=expect_2xx)
    cpu_us = (after - before) / total * 1e6 if pid and total else None
    return Sample(rps, p50, p99, cpu_us, total, wrong)


async def login(http: aiohttp.ClientSession, base: str, username: str = USERNAME) -> dict[str, str]:
    """A bench user's token pair (access_token, refresh_token)."""
    credentials = {"username": username, "password": PASSWORD}
    async with http.post(f"{base}/user/login", json=credentials) as resp:
        if resp.status != 200:
            raise SystemExit(f"login at {base} answered {resp.status}: {await resp.text()}")
        return dict(await resp.json())


def _sample(latencies: list[float], wrong: int, elapsed: float, cpu: float | None) -> Sample:
    if len(latencies) < 2:
        raise SystemExit("too few requests to measure: raise --seconds")
    q = statistics.quantiles(latencies, n=100)
    count = len(latencies)
    cpu_us = cpu / count * 1e6 if cpu is not None else None
    return Sample(count / elapsed, q[49] * 1000, q[98] * 1000, cpu_us, count, wrong)


async def drive_refreshes(base: str, pid: int, seconds: float, concurrency: int) -> Sample:
    """concurrency sessions, each refreshing its own login in a loop with its newest token."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        tokens = [(await login(http, base))["refresh_token"] for _ in range(concurrency)]
        latencies: list[float] = []
        wrong = 0
        stop_at = time.monotonic() + seconds

        async def worker(token: str) -> None:
            nonlocal wrong
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                async with http.post(f"{base}/user/refresh", json={"refresh_token": token}) as r:
                    body = await r.json()
                latencies.append(time.perf_counter() - started)
                if r.status != 200:
                    wrong += 1
                    return  # this session is gone; the others go on
                token = body["refresh_token"]

        before, began = cpu_seconds(pid), time.monotonic()
        await asyncio.gather(*(worker(t) for t in tokens))
        elapsed, cpu = time.monotonic() - began, cpu_seconds(pid) - before
    return _sample(latencies, wrong, elapsed, cpu)


async def drive_logins(base: str, pid: int | None, seconds: float, concurrency: int) -> Sample:
    """concurrency clients logging in as the bench user in a loop."""
    credentials = {"username": USERNAME, "password": PASSWORD}
    async with aiohttp.ClientSession() as http:
        latencies: list[float] = []
        wrong = 0
        stop_at = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal wrong
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                async with http.post(f"{base}/user/login", json=credentials) as r:
                    await r.read()
                latencies.append(time.perf_counter() - started)
                wrong += r.status != 200

        before, began = cpu_seconds(pid) if pid else 0.0, time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - began
        cpu = cpu_seconds(pid) - before if pid else None
    return _sample(latencies, wrong, elapsed, cpu)


@contextmanager
def login_storm(base: str, seconds: float) -> Iterator[None]:
    """Logins hammering the gateway from another process (8 at once) while a row is measured."""
    storm = subprocess.Popen(
        [sys.executable, str(Path(__file__)), "storm", base, str(seconds + 5)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # let the storm reach the hashing threads before the row starts
    try:
        yield
    finally:
        storm.kill()
        storm.wait()


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "storm":
        raise SystemExit(__doc__)
    asyncio.run(drive_logins(sys.argv[2], None, float(sys.argv[3]), 8))
