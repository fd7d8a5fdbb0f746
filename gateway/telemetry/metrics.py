"""Prometheus metrics, one registry per app (tests build many apps in one process).

Route labels are route names (or the gateway's own endpoint names), never raw paths, so the number
of series is bounded by the config.
"""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..config import MetricsConfig
from ..errors import Forbidden
from ..networks import address_in
from ..request_keys import ROUTE_NAME

__all__ = ["GatewayMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class GatewayMetrics:
    """The gateway's collectors and the handlers that record and expose them."""

    def __init__(self, config: MetricsConfig) -> None:
        self.config = config
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gateway_requests", "Requests answered", ["route", "method", "status"], registry=r
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Time to handle a request, upstream and body streaming included",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.own_work = Histogram(
            "gateway_processing_seconds",
            "The gateway's own work per proxied request: parsing, routing, token checks",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            "gateway_upstream_response_seconds",
            "Time for an upstream to answer with its response headers",
            ["upstream"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("gateway_requests_in_flight", "Requests being handled", registry=r)
        self.logins = Counter("gateway_logins", "Login attempts", ["outcome"], registry=r)
        self.refreshes = Counter("gateway_refreshes", "Refresh attempts", ["outcome"], registry=r)
        self.token_rejections = Counter(
            "gateway_token_rejections", "Access tokens refused", ["reason"], registry=r
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors", "Upstream failures", ["upstream", "kind"], registry=r
        )
        # Bounded: routes x methods x statuses, all from the config and HTTP.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def record(self, request: web.Request, status: int, started: float) -> None:
        """Count one answered request (label children are looked up once per combination)."""
        route = request.get(ROUTE_NAME, "unmatched")
        key = (route, request.method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, request.method, str(status)),
                self.duration.labels(route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(time.perf_counter() - started)

    async def handle(self, request: web.Request) -> web.Response:
        """GET /metrics in the Prometheus text format."""
        request[ROUTE_NAME] = "metrics"
        allowed = self.config.allowed_networks
        if allowed and not address_in(request.remote, allowed):
            raise Forbidden("Metrics are not available to this address")
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
