"""Prometheus metrics, one registry per app (tests build many apps in one process).

Route labels are route names (or the gateway's own endpoint names), never raw paths, so the number
of series is bounded by the config. Recording is a few additions on the event loop's thread
(`instruments`); the registry turns them into metric families when /metrics is scraped.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric

from ..config import MetricsConfig
from ..errors import Forbidden
from ..networks import address_in
from ..request_keys import CLIENT, ROUTE_NAME
from .instruments import Counter, CounterSeries, Gauge, Histogram, HistogramSeries, LabelledGauge

__all__ = ["GatewayMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class GatewayMetrics:
    """The gateway's instruments, the handler that exposes them, and the registry's collector."""

    def __init__(self, config: MetricsConfig) -> None:
        self.config = config
        self.requests = Counter(
            "gateway_requests", "Requests answered", ["route", "method", "status"]
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Time to handle a request, upstream and body streaming included",
            ["route"],
            buckets=_LATENCY_BUCKETS,
        )
        self.own_work = Histogram(
            "gateway_processing_seconds",
            "The gateway's own work per proxied request: parsing, routing, token checks",
            buckets=_LATENCY_BUCKETS,
        )
        self.upstream_latency = Histogram(
            "gateway_upstream_response_seconds",
            "Time for an upstream to answer with its response headers",
            ["upstream"],
            buckets=_LATENCY_BUCKETS,
        )
        self.in_flight = Gauge("gateway_requests_in_flight", "Requests being handled")
        self.logins = Counter("gateway_logins", "Login attempts", ["outcome"])
        self.refreshes = Counter("gateway_refreshes", "Refresh attempts", ["outcome"])
        self.token_rejections = Counter(
            "gateway_token_rejections", "Access tokens refused", ["reason"]
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors", "Upstream failures", ["upstream", "kind"]
        )
        # Audit events the table did not get (database down, queue full); the log has them.
        self.audit_failures = Counter(
            "gateway_audit_write_failures", "Audit events not stored", ["reason"]
        )
        # Per target of an upstream (label `target`: its URL), for pools of several.
        self.target_requests = Counter(
            "gateway_upstream_target_requests",
            "Requests sent to each target of an upstream, retries included",
            ["upstream", "target"],
        )
        self.target_failures = Counter(
            "gateway_upstream_target_failures",
            "Requests a target failed: connect, tls, busy, reset, timeout, protocol",
            ["upstream", "target", "kind"],
        )
        self.target_ejections = Counter(
            "gateway_upstream_target_ejections",
            "Times passive health ejected a target",
            ["upstream", "target"],
        )
        self.target_up = LabelledGauge(
            "gateway_upstream_target_up",
            "1 while a target takes traffic; 0 while it is ejected or fails its health check",
            ["upstream", "target"],
        )
        self.upstream_retries = Counter(
            "gateway_upstream_retries", "Requests retried on another target", ["upstream"]
        )
        self.breaker_refusals = Counter(
            "gateway_upstream_breaker_refusals",
            "Requests refused at once because a target's circuit breaker was full",
            ["upstream", "target"],
        )
        self.websocket_closes = Counter(
            "gateway_websocket_closes",
            "WebSockets the gateway closed: revoked, expired, reauth_failed, lifetime",
            ["reason"],
        )
        self._families = (
            self.requests,
            self.duration,
            self.own_work,
            self.upstream_latency,
            self.in_flight,
            self.logins,
            self.refreshes,
            self.token_rejections,
            self.upstream_errors,
            self.audit_failures,
            self.target_requests,
            self.target_failures,
            self.target_ejections,
            self.target_up,
            self.upstream_retries,
            self.breaker_refusals,
            self.websocket_closes,
        )
        # Bounded: routes x methods x statuses, all from the config and HTTP.
        self._answered: dict[tuple[str, str, int], tuple[CounterSeries, HistogramSeries]] = {}
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request that took `seconds` (series looked up once per
        combination of labels)."""
        key = (route, method, status)
        series = self._answered.get(key)
        if series is None:
            series = self._answered[key] = (
                self.requests.labels(route, method, str(status)),
                self.duration.labels(route),
            )
        series[0].value += 1
        series[1].observe(seconds)

    def collect(self) -> Iterator[Metric]:
        """The registry's view: every family, built now from the plain numbers."""
        for family in self._families:
            yield family.collect()

    async def handle(self, request: web.Request) -> web.Response:
        """GET /metrics in the Prometheus text format."""
        request[ROUTE_NAME] = "metrics"
        allowed = self.config.allowed_networks
        # The client's address as the edge found it (behind trusted proxies), not the peer's: a
        # load balancer on a private network must not make every client look local.
        if allowed and not address_in(request.get(CLIENT, request.remote), allowed):
            raise Forbidden("Metrics are not available to this address")
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
