"""The gateway next to its references, in one run on one machine.

    .venv/bin/python bench/compare.py [--rounds 3] [--seconds 8] [--connections 50]
                                      [--rss-requests 1000000] [--only SUBSTRING ...]
                                      [--baseline CHECKOUT]

Starts what the selected rows need, measures, prints two Markdown tables and stops what it started:
  1. references: the upstreams directly (nginx `return 200`, so whatever is in front of it is the
     bottleneck, and the demo upstream in Python); a bare aiohttp server answering a fixed 200 (the
     floor of anything aiohttp serves); a naive aiohttp + PyJWT proxy (what someone would write in
     an afternoon); HAProxy verifying the JWT itself (jwt_verify, one thread); nginx as a plain
     proxy (one worker);
  2. the gateway as a user gets it (the shipped config.yaml, set through its environment
     variables only, so the JSON access log is on): protected route with a valid token, public
     route, no token (the 401 path), the demo upstream behind it, `--workers 2` (unconfined,
     and one worker against two with each on the same CPU budget, bench/budget.py), the protected
     route during a login storm, nginx + auth_request in front with the gateway only deciding
     (deploy/forward-auth/nginx.conf), POST /user/refresh and POST /user/login on MariaDB
     (SQLite when no MariaDB answers at 127.0.0.1:3306);
  3. after the rows, the issue's targets as ratios between rows of the same run, and what the
     identity assertion header adds per request (bench/assertion_cost.py: the same route's
     upstream request head built with and without it, alternating rounds; target <= 10 us).
Rounds alternate (round 1 runs every row once, round 2 every row again, ...), so a slow spell on a
shared machine lands on every row rather than on one; the tables show medians across rounds.
HTTP rows are driven by wrk -t1; CPU is utime+stime of the measured server's process tree over the
row divided by the requests it answered. `--only` (repeatable) keeps the rows whose name contains
the text (case-insensitive) and starts only what they need. `--baseline` adds two rows (protected,
401) served by another checkout's gateway package, for a before/after in the same run.

Needs: apt-get install wrk nginx haproxy (without haproxy its row is skipped, and says so).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import assertion_cost
import budget
from harness import peak_rss_mib, rss_mib
from load import Sample, drive_logins, drive_refreshes, login_storm, run_wrk
from report import (
    BARE,
    FORWARD_AUTH,
    HAPROXY,
    NAIVE,
    ONE_BUDGETED,
    POOL,
    PROTECTED,
    REJECTED,
    WITHOUT_FRONT,
    WORKERS,
    WORKERS_BUDGETED,
    Row,
    RssChange,
    render_ratios,
    render_rows,
)
from stack import Service, Stack

RSS_SLICE_SECONDS = 10
RSS_WARMUP_SECONDS = 3
# Cores' time per worker in the budgeted rows: two such workers plus wrk and nginx fit in two
# cores with room to spare, so neither budgeted row is bound by anything but its budget.
WORKER_BUDGET = 0.6


def _tool(name: str) -> Callable[[], str | None]:
    return lambda: None if shutil.which(name) else f"apt-get install {name}"


@dataclass(frozen=True)
class Plan:
    """One row: the server it measures (started once, on first use) and one measurement of it."""

    name: str
    server: Callable[[], Service]
    measure: Callable[[Service], Sample]
    note: str = ""
    # Report the server's peak RSS on this row (not for rows whose load is not the row's own).
    rss: bool = True
    # Why the row cannot run here (a tool missing, say), or None.
    unavailable: Callable[[], str | None] = lambda: None


def catalogue(stack: Stack, args: argparse.Namespace) -> list[Plan]:
    """Every row, in table order."""

    def http(
        path: str, *, token: bool = False, expect_2xx: bool = True
    ) -> Callable[[Service], Sample]:
        def measure(service: Service) -> Sample:
            return run_wrk(
                service.base + path,
                seconds=args.seconds,
                connections=args.connections,
                pid=service.pid,
                headers=stack.bearer() if token else None,
                expect_2xx=expect_2xx,
            )

        return measure

    def forward_auth(decision_cache: int = 0) -> Callable[[Service], Sample]:
        def measure(service: Service) -> Sample:
            # Through nginx; the CPU counted is the deciding gateway's, over nginx's requests
            # (one decision each, unless nginx's cache answered).
            return run_wrk(
                f"{service.base}/bbb",
                seconds=args.seconds,
                connections=args.connections,
                pid=stack.forward_auth_gateway(decision_cache).pid,
                headers=stack.bearer(),
            )

        return measure

    def during_storm(service: Service) -> Sample:
        logins = stack.login_gateway()
        with login_storm(logins.base, args.seconds):
            # The process's CPU is mostly the storm's hashing here: not a per-request figure.
            return run_wrk(
                f"{service.base}/bbb",
                seconds=args.seconds,
                connections=args.connections,
                pid=None,
                headers=stack.bearer(),
            )

    def refreshes(service: Service) -> Sample:
        return asyncio.run(drive_refreshes(service.base, service.pid, args.seconds, 32))

    def logins(service: Service) -> Sample:
        return asyncio.run(drive_logins(service.base, service.pid, args.seconds, 8))

    database = stack.database_name
    baseline = []
    if args.baseline:
        # Another checkout's `gateway` package (PYTHONPATH comes before this venv's editable
        # install), on the same shipped config: a before/after of a change, side by side.
        def before() -> Service:
            return stack.gateway(instance="baseline", env={"PYTHONPATH": str(args.baseline)})

        baseline = [
            Plan(
                f"baseline: {PROTECTED.removeprefix('gateway: ')}", before, http("/bbb", token=True)
            ),
            Plan(
                f"baseline: {REJECTED.removeprefix('gateway: ')}",
                before,
                http("/bbb", expect_2xx=False),
            ),
        ]
    return [
        Plan("upstream direct: fast (nginx return 200)", stack.fast_upstream, http("/bbb")),
        Plan("upstream direct: demo (Python)", stack.demo_upstream, http("/bbb")),
        Plan(BARE, stack.bare_server, http("/bbb")),
        Plan(NAIVE, stack.naive_proxy, http("/bbb", token=True)),
        Plan(HAPROXY, stack.haproxy, http("/bbb", token=True), unavailable=_tool("haproxy")),
        Plan("reference: nginx plain proxy, 1 worker", stack.nginx_proxy, http("/bbb")),
        Plan(PROTECTED, stack.gateway, http("/bbb", token=True)),
        Plan(
            WITHOUT_FRONT,
            lambda: stack.gateway(instance="nofront", env={"GATEWAY_FRONT": "false"}),
            http("/bbb", token=True),
            note="GATEWAY_FRONT=false: aiohttp's server protocol for every request",
        ),
        Plan(
            "gateway: protected over HTTPS (TLS 1.3, kept-alive)",
            stack.tls_gateway,
            http("/bbb", token=True),
        ),
        Plan(
            POOL,
            lambda: stack.gateway("pool"),
            http("/bbb", token=True),
            note="targets: three nginx ports, round robin; against the row above",
        ),
        Plan("gateway: public route", stack.gateway, http("/aaa")),
        # The gateway's cheapest answer (middleware, edge, access log, metrics): the floor
        # under every row of it, forward auth's decisions included.
        Plan("gateway: GET /healthz (its floor)", stack.gateway, http("/healthz")),
        Plan(REJECTED, stack.gateway, http("/bbb", expect_2xx=False)),
        Plan(
            "gateway: protected -> demo upstream",
            lambda: stack.gateway("demo"),
            http("/bbb", token=True),
        ),
        Plan(WORKERS, lambda: stack.gateway(workers=2), http("/bbb", token=True)),
        Plan(
            ONE_BUDGETED,
            lambda: stack.gateway(budget=WORKER_BUDGET),
            http("/bbb", token=True),
            note=f"capped at {WORKER_BUDGET:g} core (bench/budget.py)",
            unavailable=budget.available,
        ),
        Plan(
            WORKERS_BUDGETED,
            lambda: stack.gateway(workers=2, budget=WORKER_BUDGET),
            http("/bbb", token=True),
            note=f"capped at {WORKER_BUDGET:g} core per worker",
            unavailable=budget.available,
        ),
        Plan(
            FORWARD_AUTH,
            stack.nginx_forward_auth,
            forward_auth(),
            note="deploy/forward-auth/nginx.conf, 1 worker; CPU: the gateway's per decision",
            rss=False,
        ),
        Plan(
            "forward auth: the same with nginx's decision cache (2 s)",
            lambda: stack.nginx_forward_auth(decision_cache=2),
            forward_auth(decision_cache=2),
            note="its #cache lines on, DECISION_CACHE_MAX_AGE=2; CPU: the gateway's per request",
            rss=False,
        ),
        # A gateway of its own, which the logins and refreshes also go to: the proxying rows'
        # peak RSS is then the proxy's, not argon2's 19 MiB per hash.
        Plan(
            "gateway: protected, during a login storm",
            stack.login_gateway,
            during_storm,
            note="8 logins at once from another process",
            rss=False,
        ),
        Plan(
            f"POST /user/refresh ({database})",
            stack.login_gateway,
            refreshes,
            note="aiohttp client, 32 sessions",
            rss=False,
        ),
        Plan(
            f"POST /user/login ({database})",
            stack.login_gateway,
            logins,
            note="aiohttp client, 8 at once; argon2id m=19456 t=2 p=1, 2 threads",
            rss=False,
        ),
        *baseline,
    ]


def select(plans: list[Plan], only: list[str]) -> list[Plan]:
    wanted = [text.lower() for text in only]
    chosen = [p for p in plans if not wanted or any(w in p.name.lower() for w in wanted)]
    if not chosen:
        names = "\n  ".join(p.name for p in plans)
        raise SystemExit(f"--only matched no row; the rows are:\n  {names}")
    return chosen


def rss_over(stack: Stack, args: argparse.Namespace) -> Row:
    """RSS before and after many proxied requests (wrk in slices until the count is reached)."""
    service = stack.gateway()
    row = Row(f"gateway: RSS over {args.rss_requests:,} proxied requests")

    def proxied(seconds: float) -> Sample:
        return run_wrk(
            f"{service.base}/bbb",
            seconds=seconds,
            connections=args.connections,
            pid=service.pid,
            headers=stack.bearer(),
        )

    # Growth is what counts: the baseline is taken warm (pools filled, caches populated) even
    # when --only left out the rows that would have warmed it.
    proxied(RSS_WARMUP_SECONDS)
    before = rss_mib(service.pid)
    done = 0
    while done < args.rss_requests:
        sample = proxied(RSS_SLICE_SECONDS)
        done += sample.requests
        row.samples.append(sample)
    row.rss_change = RssChange(before, rss_mib(service.pid), done)
    return row


def measure(args: argparse.Namespace) -> list[Row]:
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed: apt-get install {tool}")
    workdir = Path(tempfile.mkdtemp(prefix="gw-compare-"))
    stack = Stack(workdir)
    try:
        plans = select(catalogue(stack, args), args.only)
        for plan in list(plans):
            reason = plan.unavailable()
            if reason is not None:
                print(f"skipping {plan.name!r}: {reason}", file=sys.stderr)
                plans.remove(plan)
        # Everything starts before round 1, so no start-up lands in a sample.
        servers = [plan.server() for plan in plans]
        rows = [Row(plan.name, plan.note) for plan in plans]
        for round_number in range(1, args.rounds + 1):
            for plan, server, row in zip(plans, servers, rows, strict=True):
                print(f"round {round_number}/{args.rounds}: {plan.name}", file=sys.stderr)
                row.samples.append(plan.measure(server))
        for plan, server, row in zip(plans, servers, rows, strict=True):
            if plan.rss:
                row.peak_rss = peak_rss_mib(server.pid)
        if args.rss_requests:
            rows.append(rss_over(stack, args))
    finally:
        stack.stop()
        if args.keep:
            print(f"logs and configs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rss-requests", type=int, default=0)
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="ROW-SUBSTRING",
        help="run only the rows whose name contains this (repeatable)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="also measure the gateway of another checkout (e.g. a worktree of an older commit)",
    )
    args = parser.parse_args()
    rows = measure(args)
    load = os.getloadavg()[0]
    print(
        f"{args.rounds} round(s) of {args.seconds:g} s, wrk -t1 -c{args.connections}, "
        f"{os.cpu_count()} cores, load average {load:.1f} at the end; medians across rounds\n"
    )
    print(render_rows(rows))
    print(f"\nTargets (same run):\n\n{render_ratios(rows, args.connections)}")
    print(f"\n{assertion_cost.report()}")
    wrong = [row.name for row in rows if row.wrong]
    if wrong:
        print(f"\nrows with unexpected answers: {', '.join(wrong)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
