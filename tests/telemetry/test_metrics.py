"""The lock-free instruments expose exactly what prometheus_client's own would."""

from __future__ import annotations

import re

import prometheus_client as prom
from prometheus_client import CollectorRegistry, generate_latest

from gateway.config import MetricsConfig
from gateway.telemetry.metrics import GatewayMetrics

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
DURATIONS = (0.0004, 0.0005, 0.003, 0.5, 0.75, 10, 20)


def without_created(text: bytes) -> str:
    # _created holds the time a series was made: the one value that differs.
    return re.sub(r"(_created(\{[^}]*\})?) \S+", r"\1 T", text.decode())


def test_the_exposition_is_prometheus_clients() -> None:
    ours = GatewayMetrics(MetricsConfig())
    registry = CollectorRegistry()
    requests = prom.Counter(
        "gateway_requests", "Requests answered", ["route", "method", "status"], registry=registry
    )
    duration = prom.Histogram(
        "gateway_request_duration_seconds",
        "Time to handle a request, upstream and body streaming included",
        ["route"],
        buckets=BUCKETS,
        registry=registry,
    )
    own_work = prom.Histogram(
        "gateway_processing_seconds",
        "The gateway's own work per proxied request: parsing, routing, token checks",
        buckets=BUCKETS,
        registry=registry,
    )
    upstream = prom.Histogram(
        "gateway_upstream_response_seconds",
        "Time for an upstream to answer with its response headers",
        ["upstream"],
        buckets=BUCKETS,
        registry=registry,
    )
    in_flight = prom.Gauge(
        "gateway_requests_in_flight", "Requests being handled", registry=registry
    )
    logins = prom.Counter("gateway_logins", "Login attempts", ["outcome"], registry=registry)
    refreshes = prom.Counter(
        "gateway_refreshes", "Refresh attempts", ["outcome"], registry=registry
    )
    rejections = prom.Counter(
        "gateway_token_rejections", "Access tokens refused", ["reason"], registry=registry
    )
    errors = prom.Counter(
        "gateway_upstream_errors", "Upstream failures", ["upstream", "kind"], registry=registry
    )
    audit_failures = prom.Counter(
        "gateway_audit_write_failures", "Audit events not stored", ["reason"], registry=registry
    )
    pools = {
        "target_requests": prom.Counter(
            "gateway_upstream_target_requests",
            "Requests sent to each target of an upstream, retries included",
            ["upstream", "target"],
            registry=registry,
        ),
        "target_failures": prom.Counter(
            "gateway_upstream_target_failures",
            "Requests a target failed: connect, tls, busy, reset, timeout, protocol",
            ["upstream", "target", "kind"],
            registry=registry,
        ),
        "target_ejections": prom.Counter(
            "gateway_upstream_target_ejections",
            "Times passive health ejected a target",
            ["upstream", "target"],
            registry=registry,
        ),
    }
    target_up = prom.Gauge(
        "gateway_upstream_target_up",
        "1 while a target takes traffic; 0 while it is ejected or fails its health check",
        ["upstream", "target"],
        registry=registry,
    )
    retries = prom.Counter(
        "gateway_upstream_retries",
        "Requests retried on another target",
        ["upstream"],
        registry=registry,
    )
    refusals = prom.Counter(
        "gateway_upstream_breaker_refusals",
        "Requests refused at once because a target's circuit breaker was full",
        ["upstream", "target"],
        registry=registry,
    )
    socket_closes = prom.Counter(
        "gateway_websocket_closes",
        "WebSockets the gateway closed: revoked, expired, reauth_failed, lifetime",
        ["reason"],
        registry=registry,
    )

    route = 'bbb "x" \\ GET'  # quotes and backslashes in a label value are escaped
    for seconds in DURATIONS:
        ours.record(route, "GET", 200, seconds)
        requests.labels(route, "GET", "200").inc()
        duration.labels(route).observe(seconds)
        ours.own_work.observe(seconds)
        own_work.observe(seconds)
        ours.upstream_latency.labels("demo").observe(seconds)
        upstream.labels("demo").observe(seconds)
    ours.record("unmatched", "POST", 499, 0.01)
    requests.labels("unmatched", "POST", "499").inc()
    duration.labels("unmatched").observe(0.01)
    for gauge in (ours.in_flight, in_flight):
        gauge.inc()
        gauge.inc()
        gauge.dec()
    ours.logins.labels("success").inc()
    logins.labels("success").inc()
    ours.refreshes.labels("rotated").inc(2)
    refreshes.labels("rotated").inc(2)
    ours.token_rejections.labels("missing").inc()
    rejections.labels("missing").inc()
    ours.upstream_errors.labels("demo", "connect").inc()
    errors.labels("demo", "connect").inc()
    ours.audit_failures.labels("unavailable").inc()
    audit_failures.labels("unavailable").inc()
    for name, theirs in pools.items():
        labels = ("demo", "http://a:1", "reset")[: len(theirs._labelnames)]
        getattr(ours, name).labels(*labels).inc(3)
        theirs.labels(*labels).inc(3)
    ours.target_up.labels("demo", "http://a:1").value = 1.0
    target_up.labels("demo", "http://a:1").set(1.0)
    ours.upstream_retries.labels("demo").inc()
    retries.labels("demo").inc()
    ours.breaker_refusals.labels("demo", "http://a:1").inc()
    refusals.labels("demo", "http://a:1").inc()
    ours.websocket_closes.labels("revoked").inc()
    socket_closes.labels("revoked").inc()

    assert without_created(generate_latest(ours.registry)) == without_created(
        generate_latest(registry)
    )
    assert ours.refreshes.labels("rotated").value == 2


def test_a_family_without_samples_yet_is_exposed_like_prometheus_clients() -> None:
    text = generate_latest(GatewayMetrics(MetricsConfig()).registry).decode()
    assert 'gateway_processing_seconds_bucket{le="+Inf"} 0.0' in text
    assert "gateway_requests_in_flight 0.0" in text
    assert "# TYPE gateway_requests_total counter" in text
    assert "gateway_requests_total{" not in text
