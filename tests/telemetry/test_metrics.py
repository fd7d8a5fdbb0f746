"""The lock-free instruments expose exactly what prometheus_client's own would."""

from __future__ import annotations

import re
from typing import Any

import prometheus_client as prom
from prometheus_client import CollectorRegistry, generate_latest

from gateway.config import MetricsConfig
from gateway.telemetry.instruments import Counter, Gauge, Histogram, LabelledGauge
from gateway.telemetry.metrics import GatewayMetrics

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
DURATIONS = (0.0004, 0.0005, 0.003, 0.5, 0.75, 10, 20)


def without_created(text: bytes) -> str:
    # _created holds the time a series was made: the one value that differs.
    return re.sub(r"(_created(\{[^}]*\})?) \S+", r"\1 T", text.decode())


Family = Counter | Gauge | Histogram | LabelledGauge


def prometheus_twin(family: Family, registry: CollectorRegistry) -> Any:
    """prometheus_client's own instrument with the name, help and labels of one of ours."""
    if isinstance(family, Histogram):
        return prom.Histogram(
            family.name,
            family.documentation,
            family.labelnames,
            buckets=BUCKETS,
            registry=registry,
        )
    kind = prom.Counter if isinstance(family, Counter) else prom.Gauge
    return kind(family.name, family.documentation, family.labelnames, registry=registry)


def test_the_exposition_is_prometheus_clients() -> None:
    ours = GatewayMetrics(MetricsConfig())
    registry = CollectorRegistry()
    theirs = {
        attribute: prometheus_twin(family, registry)
        for attribute, family in vars(ours).items()
        if isinstance(family, Family)
    }

    route = 'bbb "x" \\ GET'  # quotes and backslashes in a label value are escaped
    for seconds in DURATIONS:
        ours.record(route, "GET", 200, seconds)
        theirs["requests"].labels(route, "GET", "200").inc()
        theirs["duration"].labels(route).observe(seconds)
        ours.own_work.observe(seconds)
        theirs["own_work"].observe(seconds)
        ours.upstream_latency.labels("demo").observe(seconds)
        theirs["upstream_latency"].labels("demo").observe(seconds)
    ours.record("unmatched", "POST", 499, 0.01)
    theirs["requests"].labels("unmatched", "POST", "499").inc()
    theirs["duration"].labels("unmatched").observe(0.01)
    for gauge in (ours.in_flight, theirs["in_flight"]):
        gauge.inc()
        gauge.inc()
        gauge.dec()
    # One series of each counter, and how far it goes up, in both.
    counted = {
        "logins": (("success",), 1),
        "refreshes": (("rotated",), 2),
        "token_rejections": (("missing",), 1),
        "upstream_errors": (("demo", "connect"), 1),
        "audit_failures": (("unavailable",), 1),
        "target_requests": (("demo", "http://a:1"), 3),
        "target_failures": (("demo", "http://a:1", "reset"), 3),
        "target_ejections": (("demo", "http://a:1"), 3),
        "upstream_retries": (("demo",), 1),
        "breaker_refusals": (("demo", "http://a:1"), 1),
        "websocket_closes": (("revoked",), 1),
    }
    for name, (labels, amount) in counted.items():
        getattr(ours, name).labels(*labels).inc(amount)
        theirs[name].labels(*labels).inc(amount)
    ours.target_up.labels("demo", "http://a:1").value = 1.0
    theirs["target_up"].labels("demo", "http://a:1").set(1.0)

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
