"""The gateway next to a C proxy, in one run on one machine.

    .venv/bin/python bench/compare.py [--rounds 3] [--seconds 8] [--connections 50]
                                      [--rss-requests 1000000]

Starts everything it needs, measures, prints a table and stops what it started:
  1. the upstreams directly: a fast fixed-response upstream (nginx `return 200`, so the gateway is
     the bottleneck) and the demo upstream (Python, a realistic pairing);
  2. the gateway: protected route with a valid token, public route, no token (the 401 path), the
     protected route with the JSON access log on, and `--workers 2`;
  3. references: HAProxy verifying the JWT itself (jwt_verify, one thread) and nginx as a plain
     proxy (one worker), when installed;
  4. POST /user/refresh and POST /user/login on MariaDB (driven by an aiohttp client: these rows
     are bound by the database and by argon2, not by the load generator).
HTTP rows are driven by wrk (not Python). CPU is the utime+stime of the measured server's process
tree over the run divided by its requests. Several rounds; medians and spread (min-max).

Needs: apt-get install wrk haproxy nginx (rows whose tool is missing are skipped, and say so).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pymysql
import yaml
from harness import cpu_seconds, free_port, peak_rss_mib, rss_mib, wait_for

SECRET = secrets.token_urlsafe(48)
PASSWORD = "bench-password"  # noqa: S105 - a throwaway bench user's


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float | None


@dataclass
class Row:
    name: str
    samples: list[Sample] = field(default_factory=list)
    peak_rss: float | None = None
    note: str = ""

    def median(self, attribute: str) -> float | None:
        values = [getattr(s, attribute) for s in self.samples if getattr(s, attribute) is not None]
        return statistics.median(values) if values else None

    def spread(self) -> str:
        rates = [s.rps for s in self.samples]
        return f"{min(rates):,.0f}-{max(rates):,.0f}" if rates else ""


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    def to_ms(value: str) -> float:
        number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    return rps, p50, p99, total


def run_wrk(
    url: str,
    seconds: float,
    connections: int,
    pid: int | None,
    headers: dict[str, str] | None = None,
) -> Sample:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url]
    for name, value in (headers or {}).items():
        argv[1:1] = ["-H", f"{name}: {value}"]
    before = cpu_seconds(pid) if pid else 0.0
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    after = cpu_seconds(pid) if pid else 0.0
    rps, p50, p99, total = parse_wrk(result.stdout)
    cpu_us = (after - before) / total * 1e6 if pid and total else None
    return Sample(rps, p50, p99, cpu_us)


class Stack:
    """Everything the rows need, started once and stopped at the end."""

    def __init__(self, workdir: Path, database_url: str) -> None:
        self.workdir = workdir
        self.database_url = database_url
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, argv: list[str], port: int, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv, cwd=self.workdir, env=env or dict(os.environ), stdout=log, stderr=log
        )
        self.procs.append(proc)
        wait_for(port)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def nginx(
        self, name: str, body: str, http_extra: str = ""
    ) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        conf = self.workdir / f"{name}.conf"
        conf.write_text(
            f"daemon off; worker_processes 1; pid {self.workdir}/{name}.pid;\n"
            f"error_log {self.workdir}/{name}.err warn;\n"
            "events { worker_connections 4096; }\n"
            "http { access_log off; keepalive_requests 1000000;\n"
            f"  client_body_temp_path {self.workdir}; proxy_temp_path {self.workdir};\n"
            f"  {http_extra}\n"
            f"  server {{ listen 127.0.0.1:{port}; {body} }} }}\n"
        )
        return self.start(name, ["nginx", "-c", str(conf), "-p", str(self.workdir)], port), port

    def gateway(
        self,
        name: str,
        routes: list[dict[str, object]],
        upstreams: dict[str, str],
        *,
        extra_args: list[str] | None = None,
        log_level: str = "warning",
    ) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        config = {
            "server": {"port": port},
            "database": {"url": self.database_url},
            "tokens": {"secret": SECRET},
            "logging": {"format": "json", "level": log_level},
            "upstreams": {n: {"url": u, "max_connections": 200} for n, u in upstreams.items()},
            "routes": routes,
            "rate_limits": {"per_user_and_address": 0, "per_user": 0, "per_address": 0},
        }
        path = self.workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        argv = [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--config",
            str(path),
            *(extra_args or []),
        ]
        return self.start(name, argv, port), f"http://127.0.0.1:{port}"


async def login_pair(base: str) -> dict[str, str]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/user/login", json={"username": "bench", "password": PASSWORD}
        ) as resp:
            return dict(await resp.json())


async def drive_refreshes(base: str, pid: int, seconds: float, concurrency: int) -> Sample:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        tokens = [(await login_pair(base))["refresh_token"] for _ in range(concurrency)]
        latencies: list[float] = []
        stop_at = time.monotonic() + seconds

        async def worker(token: str) -> None:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                async with http.post(f"{base}/user/refresh", json={"refresh_token": token}) as r:
                    token = (await r.json())["refresh_token"]
                latencies.append(time.perf_counter() - started)

        before, began = cpu_seconds(pid), time.monotonic()
        await asyncio.gather(*(worker(t) for t in tokens))
        elapsed, cpu = time.monotonic() - began, cpu_seconds(pid) - before
    q = statistics.quantiles(latencies, n=100)
    return Sample(len(latencies) / elapsed, q[49] * 1000, q[98] * 1000, cpu / len(latencies) * 1e6)


async def drive_logins(base: str, pid: int, seconds: float, concurrency: int) -> Sample:
    async with aiohttp.ClientSession() as http:
        latencies: list[float] = []
        stop_at = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                async with http.post(
                    f"{base}/user/login", json={"username": "bench", "password": PASSWORD}
                ) as r:
                    await r.read()
                latencies.append(time.perf_counter() - started)

        before, began = cpu_seconds(pid), time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.monotonic() - began, cpu_seconds(pid) - before
    q = statistics.quantiles(latencies, n=100)
    return Sample(len(latencies) / elapsed, q[49] * 1000, q[98] * 1000, cpu / len(latencies) * 1e6)


@contextmanager
def login_storm(base: str, seconds: float) -> Iterator[None]:
    """Logins hammering the gateway from another process while a row is measured."""
    code = (
        "import asyncio, sys; sys.path.insert(0, sys.argv[1]);"
        "from compare import drive_logins;"
        "asyncio.run(drive_logins(sys.argv[2], 0, float(sys.argv[3]), 8))"
    )
    storm = subprocess.Popen(
        [sys.executable, "-c", code, str(Path(__file__).parent), base, str(seconds + 5)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    try:
        yield
    finally:
        storm.kill()
        storm.wait()


def mysql_url() -> str | None:
    try:
        conn = pymysql.connect(
            host="127.0.0.1", port=3306, user="root", connect_timeout=2, autocommit=True
        )
    except pymysql.err.MySQLError:
        return None
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS gw_bench_compare")
        cur.execute("CREATE DATABASE gw_bench_compare")
    conn.close()
    return "mysql://root@127.0.0.1:3306/gw_bench_compare"


def measure(args: argparse.Namespace) -> list[Row]:
    workdir = Path(tempfile.mkdtemp(prefix="gw-compare-"))
    database = mysql_url() or f"sqlite:///{workdir / 'bench.db'}"
    stack = Stack(workdir, database)
    rows: list[Row] = []
    missing = [tool for tool in ("wrk", "nginx", "haproxy") if shutil.which(tool) is None]
    if "wrk" in missing:
        raise SystemExit("wrk is needed for the HTTP rows: apt-get install wrk")
    try:
        if "nginx" not in missing:
            fast_proc, fast_port = stack.nginx("fast-upstream", 'location / { return 200 "bbb"; }')
            fast = f"http://127.0.0.1:{fast_port}"
        else:
            raise SystemExit("nginx is needed for the fast upstream: apt-get install nginx")
        demo_port = free_port()
        demo_proc = stack.start(
            "demo-upstream",
            [sys.executable, "-m", "upstream_demo", "--port", str(demo_port)],
            demo_port,
        )
        demo = f"http://127.0.0.1:{demo_port}"
        routes: list[dict[str, object]] = [
            {"path": "/aaa", "upstream": "fast", "auth": "public"},
            {"path": "/bbb", "upstream": "fast", "auth": "required"},
            {
                "path": "/demo-bbb",
                "upstream": "demo",
                "auth": "required",
                "strip_prefix": "/demo-bbb",
                "add_prefix": "/bbb",
            },
        ]
        upstreams = {"fast": fast, "demo": demo}
        env = {**os.environ}
        subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "db",
                "init",
                "--config",
                str(_write_admin_config(workdir, database)),
            ],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "user",
                "add",
                "bench",
                "--password-stdin",
                "--config",
                str(workdir / "admin.yaml"),
            ],
            input=f"{PASSWORD}\n".encode(),
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        gateway, base = stack.gateway("gateway", routes, upstreams)
        logged, logged_base = stack.gateway("gateway-logging", routes, upstreams, log_level="info")
        workers, workers_base = stack.gateway(
            "gateway-workers", routes, upstreams, extra_args=["--workers", "2"]
        )
        time.sleep(1.5)
        token = asyncio.run(login_pair(base))["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}
        haproxy = _start_haproxy(stack, fast_port) if "haproxy" not in missing else None
        nginx_base = None
        if "nginx" not in missing:
            proxy_body = (
                "location / { proxy_pass http://fast; proxy_http_version 1.1; "
                'proxy_set_header Connection ""; }'
            )
            pool = f"upstream fast {{ server 127.0.0.1:{fast_port}; keepalive 64; }}"
            nginx_proc, nginx_port = stack.nginx("nginx-proxy", proxy_body, pool)
            nginx_base = f"http://127.0.0.1:{nginx_port}"

        plan: list[tuple[str, str, int | None, dict[str, str] | None]] = [
            ("upstream direct: fast (nginx return 200)", f"{fast}/bbb", fast_proc.pid, None),
            ("upstream direct: demo (Python)", f"{demo}/bbb", demo_proc.pid, None),
            ("gateway: protected, valid token", f"{base}/bbb", gateway.pid, bearer),
            ("gateway: public route", f"{base}/aaa", gateway.pid, None),
            ("gateway: no token (401)", f"{base}/bbb", gateway.pid, None),
            ("gateway: protected -> demo upstream", f"{base}/demo-bbb", gateway.pid, bearer),
            ("gateway: protected, JSON access log on", f"{logged_base}/bbb", logged.pid, bearer),
            ("gateway --workers 2: protected", f"{workers_base}/bbb", workers.pid, bearer),
        ]
        if haproxy is not None:
            haproxy_proc, haproxy_base = haproxy
            plan.append(
                (
                    "reference: HAProxy jwt_verify, 1 thread",
                    f"{haproxy_base}/bbb",
                    haproxy_proc.pid,
                    bearer,
                )
            )
        if nginx_base:
            plan.append(
                (
                    "reference: nginx plain proxy, 1 worker",
                    f"{nginx_base}/bbb",
                    nginx_proc.pid,
                    None,
                )
            )
        rows = [Row(name) for name, *_ in plan]
        for round_number in range(args.rounds):
            print(f"round {round_number + 1}/{args.rounds}", file=sys.stderr)
            for row, (_, url, pid, headers) in zip(rows, plan, strict=True):
                row.samples.append(run_wrk(url, args.seconds, args.connections, pid, headers))
        for row, (_, _, pid, _) in zip(rows, plan, strict=True):
            if pid:
                row.peak_rss = peak_rss_mib(pid)

        storm = Row("gateway: protected, during a login storm")
        with login_storm(base, args.seconds * args.rounds):
            for _ in range(args.rounds):
                storm.samples.append(
                    run_wrk(f"{base}/bbb", args.seconds, args.connections, None, bearer)
                )
        rows.append(storm)

        refresh = Row(
            f"POST /user/refresh ({'MariaDB' if 'mysql' in database else 'SQLite'})",
            note="aiohttp client, 32 sessions",
        )
        login = Row(
            f"POST /user/login ({'MariaDB' if 'mysql' in database else 'SQLite'})",
            note="aiohttp client, 8 at once; argon2id m=19456 t=2 p=1, 2 threads",
        )
        for _ in range(args.rounds):
            refresh.samples.append(
                asyncio.run(drive_refreshes(base, gateway.pid, args.seconds, 32))
            )
            login.samples.append(asyncio.run(drive_logins(base, gateway.pid, args.seconds, 8)))
        rows += [refresh, login]

        if args.rss_requests:
            rows.append(_rss_over(base, gateway.pid, bearer, args))
    finally:
        stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    for tool in missing:
        print(f"skipped the {tool} rows: apt-get install {tool}", file=sys.stderr)
    return rows


def _write_admin_config(workdir: Path, database: str) -> Path:
    path = workdir / "admin.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "database": {"url": database},
                "tokens": {"secret": SECRET},
                "upstreams": {"x": {"url": "http://127.0.0.1:1"}},
            }
        )
    )
    return path


def _start_haproxy(stack: Stack, upstream_port: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    verify = f'var(txn.bearer),jwt_verify(txn.alg,"{SECRET}")'
    conf = stack.workdir / "haproxy.cfg"
    conf.write_text(f"""global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend gateway
    bind 127.0.0.1:{port}
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
    http-request deny status 401 unless {{ var(txn.alg) -m str HS256 }}
    http-request deny status 401 unless {{ {verify} -m int 1 }}
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
    http-request set-var(txn.now) date
    http-request deny status 401 if {{ var(txn.exp),sub(txn.now) -m int lt 0 }}
    default_backend upstream
backend upstream
    http-reuse always
    server fast 127.0.0.1:{upstream_port}
""")
    proc = stack.start("haproxy", ["haproxy", "-f", str(conf), "-db"], port)
    return proc, f"http://127.0.0.1:{port}"


def _rss_over(base: str, pid: int, bearer: dict[str, str], args: argparse.Namespace) -> Row:
    """RSS before and after many proxied requests (wrk in slices until the count is reached)."""
    row = Row(f"gateway RSS over {args.rss_requests:,} proxied requests")
    start_rss = rss_mib(pid)
    done = 0
    while done < args.rss_requests:
        sample = run_wrk(f"{base}/bbb", 10, args.connections, pid, bearer)
        done += int(sample.rps * 10)
        row.samples.append(sample)
    row.note = f"RSS {start_rss:.1f} -> {rss_mib(pid):.1f} MiB after {done:,} requests"
    return row


def render(rows: list[Row]) -> str:
    haproxy = next((r for r in rows if r.name.startswith("reference: HAProxy")), None)
    nginx = next((r for r in rows if r.name.startswith("reference: nginx")), None)
    lines = [
        (
            "| row | req/s (median) | spread | p50 ms | p99 ms | CPU µs/req | peak RSS MiB "
            "| vs HAProxy | vs nginx |"
        ),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        rps = row.median("rps") or 0.0
        cpu = row.median("cpu_us")

        def ratio(reference: Row | None, rps: float = rps) -> str:
            base = reference.median("rps") if reference else None
            return f"{rps / base:.0%}" if base else "-"

        lines.append(
            f"| {row.name}{' (' + row.note + ')' if row.note else ''} | {rps:,.0f} "
            f"| {row.spread()} | {row.median('p50_ms') or 0:.2f} | {row.median('p99_ms') or 0:.2f} "
            f"| {f'{cpu:,.0f}' if cpu is not None else '-'} "
            f"| {f'{row.peak_rss:.0f}' if row.peak_rss else '-'} | {ratio(haproxy)} "
            f"| {ratio(nginx)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rss-requests", type=int, default=0)
    args = parser.parse_args()
    print(render(measure(args)))


if __name__ == "__main__":
    main()
