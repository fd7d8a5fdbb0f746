"""What a run prints: the rows as a Markdown table (the README's), then the issue's targets as
ratios between rows of the same run, each with its bound and whether it is met."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from load import Sample

__all__ = [
    "BARE",
    "FORWARD_AUTH",
    "HAPROXY",
    "NAIVE",
    "ONE_BUDGETED",
    "PROTECTED",
    "REJECTED",
    "WORKERS",
    "WORKERS_BUDGETED",
    "Row",
    "RssChange",
    "render_ratios",
    "render_rows",
]


@dataclass(frozen=True)
class RssChange:
    before_mib: float
    after_mib: float
    requests: int


@dataclass
class Row:
    name: str
    note: str = ""
    samples: list[Sample] = field(default_factory=list)
    peak_rss: float | None = None
    rss_change: RssChange | None = None

    def median(self, attribute: str) -> float | None:
        values = [getattr(s, attribute) for s in self.samples]
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    def spread(self) -> str:
        rates = [s.rps for s in self.samples]
        return f"{min(rates):,.0f}-{max(rates):,.0f}" if rates else ""

    @property
    def wrong(self) -> int:
        return sum(s.wrong for s in self.samples)


def render_rows(rows: list[Row]) -> str:
    """The Markdown table of every row: medians across rounds, spread = min-max req/s."""
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

        def versus(reference: Row | None, rps: float = rps) -> str:
            base = reference.median("rps") if reference else None
            return f"{rps / base:.0%}" if base else "-"

        notes = [row.note] if row.note else []
        if row.wrong:
            notes.append(f"**{row.wrong:,} unexpected answers or socket errors**")
        if row.rss_change:
            change = row.rss_change
            notes.append(
                f"RSS {change.before_mib:.1f} -> {change.after_mib:.1f} MiB "
                f"after {change.requests:,} requests"
            )
        label = f"{row.name} ({'; '.join(notes)})" if notes else row.name
        lines.append(
            f"| {label} | {rps:,.0f} | {row.spread()} "
            f"| {row.median('p50_ms') or 0:.2f} | {row.median('p99_ms') or 0:.2f} "
            f"| {f'{cpu:,.0f}' if cpu is not None else '-'} "
            f"| {f'{row.peak_rss:.0f}' if row.peak_rss else '-'} "
            f"| {versus(haproxy)} | {versus(nginx)} |"
        )
    return "\n".join(lines)


_UNITS = {"cpu_us": ("µs", "{:,.0f}"), "rps": ("req/s", "{:,.0f}"), "p99_ms": ("ms", "{:.2f}")}


@dataclass(frozen=True)
class Ratio:
    """A target stated as row.attribute / reference.attribute against a bound."""

    target: str
    row: str
    reference: str
    attribute: str
    bound: float | None  # None: shown for information, not a target
    at_most: bool  # met when the ratio is <= bound; otherwise when it is >= bound
    percent: bool = False  # the issue states this one as a percentage

    def evaluate(self, rows: dict[str, Row]) -> tuple[str, str]:
        """(measured, met?) for the table."""
        row, reference = rows.get(self.row), rows.get(self.reference)
        if row is None or reference is None:
            missing = self.row if row is None else self.reference
            return f"not measured ({missing!r} not run)", "-"
        value, base = row.median(self.attribute), reference.median(self.attribute)
        if value is None or not base:
            return "no measurement", "-"
        unit, number = _UNITS[self.attribute]
        ratio = value / base
        shown = f"{ratio:.0%}" if self.percent else f"{ratio:.2f}x"
        measured = f"{shown} ({number.format(value)} vs {number.format(base)} {unit})"
        if row.wrong or reference.wrong:
            return measured, "invalid (unexpected answers)"
        if self.bound is None:
            return measured, "(for information)"
        met = ratio <= self.bound if self.at_most else ratio >= self.bound
        return measured, "met" if met else "not met"


# Row names the targets refer to (compare.py names its rows with these).
PROTECTED = "gateway: protected, valid token"
# The same, served by aiohttp's server protocol alone (server.front: false).
WITHOUT_FRONT = "gateway: protected, without the front"
REJECTED = "gateway: no token (401)"
WORKERS = "gateway --workers 2: protected"
# The protected row with one worker and with two, each worker given the same CPU budget below a
# core (bench/budget.py): the gateway's scaling, apart from wrk and nginx sharing the two cores.
ONE_BUDGETED = "gateway, 1 worker on a CPU budget: protected"
WORKERS_BUDGETED = "gateway --workers 2, each on the same CPU budget: protected"
BARE = "reference: bare aiohttp server, fixed 200"
NAIVE = "reference: naive aiohttp + PyJWT proxy"
HAPROXY = "reference: HAProxy jwt_verify, 1 thread"
# CPU of this row is the deciding gateway's only (nginx's is not counted).
FORWARD_AUTH = "forward auth: nginx auth_request -> gateway decides, protected"

# The same gateway and route, its upstream three targets (balanced, health-tracked) instead of one.
POOL = "gateway: protected, upstream a pool of 3 targets"

RATIOS = [
    Ratio(
        "gateway CPU per proxied authorized request ≤ 0.6x the naive proxy's",
        PROTECTED,
        NAIVE,
        "cpu_us",
        0.6,
        at_most=True,
    ),
    Ratio(
        "gateway CPU per proxied authorized request ≤ 2.5x the bare aiohttp server's",
        PROTECTED,
        BARE,
        "cpu_us",
        2.5,
        at_most=True,
    ),
    Ratio(
        "gateway throughput ≥ 20% of HAProxy's single thread",
        PROTECTED,
        HAPROXY,
        "rps",
        0.2,
        at_most=False,
        percent=True,
    ),
    Ratio("gateway p99 ≤ the naive proxy's", PROTECTED, NAIVE, "p99_ms", 1.0, at_most=True),
    Ratio(
        "401 path CPU ≤ 1.5x the bare aiohttp server's", REJECTED, BARE, "cpu_us", 1.5, at_most=True
    ),
    Ratio(
        "`--workers 2` req/s ≥ 1.7x one worker's, each worker on the same CPU budget",
        WORKERS_BUDGETED,
        ONE_BUDGETED,
        "rps",
        1.7,
        at_most=False,
    ),
    # Unconfined, two workers share the two cores with wrk and nginx: at most 2G/(G+W) of one
    # worker for a gateway at G us per request and load plus upstream at W (README).
    Ratio(
        "`--workers 2` req/s vs one worker's, unconfined (bound by this machine's two cores)",
        WORKERS,
        PROTECTED,
        "rps",
        None,
        at_most=False,
    ),
    Ratio(
        "a pool of 3 targets: CPU per request ≤ 1.10x one target's",
        POOL,
        PROTECTED,
        "cpu_us",
        1.10,
        at_most=True,
    ),
    Ratio(
        "forward auth: gateway CPU per decision ≤ 1.3x the bare aiohttp server's per request",
        FORWARD_AUTH,
        BARE,
        "cpu_us",
        1.3,
        at_most=True,
    ),
    Ratio(
        "forward auth: req/s through nginx ≥ 2x the gateway's own proxy mode",
        FORWARD_AUTH,
        PROTECTED,
        "rps",
        2.0,
        at_most=False,
    ),
]

RSS_TOLERANCE = 0.10


def render_ratios(rows: list[Row], connections: int) -> str:
    """The targets table, from the medians of the rows above it."""
    by_name = {row.name: row for row in rows}
    lines = ["| target | measured | met? |", "| --- | --- | --- |"]
    for ratio in RATIOS:
        measured, met = ratio.evaluate(by_name)
        target = ratio.target.replace("p99", f"p99 at {connections} connections")
        lines.append(f"| {target} | {measured} | {met} |")
    rss = next((r.rss_change for r in rows if r.rss_change), None)
    target = f"RSS flat (± {RSS_TOLERANCE:.0%}) across `--rss-requests`"
    if rss is None:
        lines.append(f"| {target} | not measured (no `--rss-requests`) | - |")
    else:
        change = rss.after_mib / rss.before_mib - 1
        measured = (
            f"{rss.before_mib:.1f} -> {rss.after_mib:.1f} MiB ({change:+.1%}) "
            f"after {rss.requests:,} requests"
        )
        lines.append(
            f"| {target} | {measured} | {'met' if abs(change) <= RSS_TOLERANCE else 'not met'} |"
        )
    return "\n".join(lines)
