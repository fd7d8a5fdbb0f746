"""The targets of an upstream: for each, its connection pool and what is known of its state
(requests in flight, passive health, the active check's verdict, its metrics); for the upstream,
the balancer, the circuit breaker's limits, the retry budget and the active checks.

Built with the runtime (proxy/runtime.py), so a SIGHUP that changes the targets builds a new set
while requests in flight finish on the old one.
"""

from __future__ import annotations

import logging

from yarl import URL

from ..config import TargetConfig, UpstreamConfig
from ..errors import UpstreamUnavailable
from ..telemetry.instruments import CounterSeries
from ..telemetry.metrics import GatewayMetrics
from .balancer import create_balancer
from .breaker import Breaker
from .health import ActiveChecks, PassiveHealth
from .pool import ConnectionPool
from .retry_budget import RetryBudget

__all__ = ["Target", "Targets"]

log = logging.getLogger(__name__)


class Target:
    """One process of an upstream."""

    __slots__ = (
        "_ejections",
        "_failures",
        "_metrics",
        "_refusals",
        "_requests",
        "_up",
        "active",
        "checked_healthy",
        "health",
        "host",
        "label",
        "pool",
        "prefix",
        "upstream",
        "url",
        "weight",
    )

    def __init__(
        self,
        upstream: UpstreamConfig,
        config: TargetConfig,
        metrics: GatewayMetrics,
        *,
        ejectable: bool,
    ) -> None:
        self.upstream = upstream.name
        self.url = config.url
        self.weight = config.weight
        self.label = str(config.url).rstrip("/")
        # The path prefix of its URL, and the Host it is sent.
        self.prefix = config.url.raw_path.rstrip("/")
        self.host = host_header(config.url)
        self.pool = ConnectionPool(upstream, config.url)
        self.active = 0
        self.health = PassiveHealth(
            max_failures=upstream.max_failures,
            ejection_time=upstream.ejection_time,
            max_ejection_time=upstream.max_ejection_time,
            ejectable=ejectable,
        )
        self.checked_healthy = True
        self._metrics = metrics
        self._requests = metrics.target_requests.labels(upstream.name, self.label)
        self._ejections = metrics.target_ejections.labels(upstream.name, self.label)
        self._refusals = metrics.breaker_refusals.labels(upstream.name, self.label)
        self._failures: dict[str, CounterSeries] = {}
        self._up = metrics.target_up.labels(upstream.name, self.label)
        self._up.value = 1.0

    def __str__(self) -> str:
        return self.label

    @property
    def pending(self) -> int:
        return self.pool.pending

    @property
    def saturated(self) -> bool:
        return self.pool.saturated

    def usable(self) -> bool:
        """Whether it may take a request now (its breaker is checked after it is picked)."""
        return self.checked_healthy and self.health.admits()

    def begin(self) -> bool:
        """A request goes to it; True when that request is the probe of an ejection."""
        self.active += 1
        self._requests.value += 1
        return self.health.begin()

    def end(self, probe: bool) -> None:
        """The request is done with it (answered, failed, or handed to a retry)."""
        self.active -= 1
        if probe:
            self.health.probing = False

    def succeeded(self, probe: bool) -> None:
        if self.health.succeeded(probe):
            log.info("upstream %s target %s is back: its probe succeeded", self.upstream, self)
            self._show_state()

    def failed(self, kind: str, probe: bool, *, refused: bool = False) -> None:
        series = self._failures.get(kind)
        if series is None:
            series = self._failures[kind] = self._metrics.target_failures.labels(
                self.upstream, self.label, kind
            )
        series.value += 1
        if self.health.failed(probe, refused=refused):
            self._ejections.value += 1
            log.warning(
                "upstream %s target %s ejected for %.3gs after a %s failure",
                self.upstream,
                self,
                self.health.retry_after(),
                kind,
            )
            self._show_state()

    def refused_by_breaker(self) -> None:
        self._refusals.value += 1

    def set_checked(self, passed: bool) -> None:
        """The active health check's verdict."""
        self.checked_healthy = passed
        self._show_state()

    def _show_state(self) -> None:
        self._up.value = 1.0 if self.checked_healthy and not self.health.ejected else 0.0


class Targets:
    """Every target of one upstream, and how a request picks one."""

    def __init__(self, upstream: UpstreamConfig, metrics: GatewayMetrics) -> None:
        self.upstream = upstream
        ejectable = len(upstream.targets) > 1
        self.all = tuple(
            Target(upstream, target, metrics, ejectable=ejectable) for target in upstream.targets
        )
        self._balancer = create_balancer(upstream.balance, self.all)
        self.breaker = Breaker(max_requests=upstream.max_requests, max_pending=upstream.max_pending)
        self.budget = RetryBudget(upstream.retry_budget)
        self.checks = (
            ActiveChecks(
                upstream.name,
                upstream.health,
                self.all,
                tls=upstream.tls.context,
                server_name=upstream.tls.server_name or None,
            )
            if upstream.health
            else None
        )
        self._retries = metrics.upstream_retries.labels(upstream.name)

    def start(self) -> None:
        if self.checks is not None:
            self.checks.start()

    async def close(self) -> None:
        if self.checks is not None:
            await self.checks.close()
        for target in self.all:
            target.pool.close()

    def pick(self, tried: list[Target] | None = None) -> Target | None:
        """The next target for a request, skipping those it has `tried`; None when none is
        usable."""
        if not tried:
            return self._balancer.pick(Target.usable)
        return self._balancer.pick(lambda target: target not in tried and target.usable())

    def retried(self) -> None:
        self._retries.value += 1

    def unavailable(self) -> UpstreamUnavailable:
        """The 503 for a request no target can take: retry when the first ejection ends (or
        after a health-check interval)."""
        waits = [t.health.retry_after() for t in self.all if t.checked_healthy]
        if self.upstream.health is not None and len(waits) < len(self.all):
            waits.append(self.upstream.health.interval)
        count = len(self.all)
        return UpstreamUnavailable(
            self.upstream.name,
            "no_target",
            f"has no target available ({'the one' if count == 1 else f'all {count}'} ejected "
            "or failing health checks)",
            retry_after=min(waits, default=1.0),
        )


def host_header(url: URL) -> str:
    """The Host header for a target's URL (the port only when it is not the scheme's)."""
    default = 443 if url.scheme == "https" else 80
    host = url.raw_host or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return host if url.port in (None, default) else f"{host}:{url.port}"
