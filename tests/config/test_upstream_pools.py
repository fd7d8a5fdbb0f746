"""Upstreams of several targets in the config: url or targets, weights, balancing, health
checks, breaker and retry settings, and the problems each bad value gives."""

from __future__ import annotations

from typing import Any

from yarl import URL

from gateway.config import HealthCheckConfig, TargetConfig, parse_config

from .test_config import minimal, problems_of


def upstream(**settings: Any) -> dict[str, Any]:
    return minimal(upstreams={"demo": settings})


def test_one_url_is_one_target_with_the_defaults() -> None:
    config = parse_config(upstream(url="http://127.0.0.1:3000"), environ={})
    demo = config.upstreams["demo"]
    assert demo.targets == (TargetConfig(URL("http://127.0.0.1:3000"), weight=1),)
    assert (demo.balance, demo.retries, demo.retry_budget, demo.health) == (
        "round_robin",
        1,
        0.2,
        None,
    )


def test_targets_are_urls_or_mappings_with_a_weight() -> None:
    raw = upstream(
        targets=["http://a:1", {"url": "http://b:2/api", "weight": 3}],
        balance="least_requests",
        retries=2,
        retry_budget="10%",
        health={"path": "/ready", "interval": "2s", "timeout": "500ms", "expect": 204},
    )
    demo = parse_config(raw, environ={}).upstreams["demo"]
    assert demo.targets == (
        TargetConfig(URL("http://a:1")),
        TargetConfig(URL("http://b:2/api"), weight=3),
    )
    assert demo.url == URL("http://a:1")
    assert (demo.balance, demo.retries, demo.retry_budget) == ("least_requests", 2, 0.1)
    assert demo.health == HealthCheckConfig(path="/ready", interval=2.0, timeout=0.5, expect=204)


def test_every_problem_of_an_upstream_pool_is_reported_with_its_path() -> None:
    problems = problems_of(
        upstream(
            url="http://a:1",
            targets=["ftp://b", {"url": "http://c:3", "weight": 0, "colour": "red"}, "http://c:3"],
            balance="random",
            retry_budget="150%",
            ejection_time="10s",
            max_ejection_time="1s",
            health={"path": "ready", "interval": "1s", "timeout": "2s"},
        )
    )
    assert problems == [
        "c.yaml: upstreams.demo.targets: set either url or targets, not both",
        (
            "c.yaml: upstreams.demo.targets[0].url: 'ftp://b' is not an http:// or https:// "
            "URL with a host"
        ),
        "c.yaml: upstreams.demo.targets[1].weight: 0 is outside 1..1000",
        "c.yaml: upstreams.demo.targets[1].colour: unknown key",
        "c.yaml: upstreams.demo.targets[2]: http://c:3 is listed twice; give it a weight instead",
        "c.yaml: upstreams.demo.health.path: 'ready' must be a path starting with '/'",
        "c.yaml: upstreams.demo.health.timeout: must not be longer than the interval",
        "c.yaml: upstreams.demo.balance: 'random' must be round_robin or least_requests",
        "c.yaml: upstreams.demo.retry_budget: '150%' must be between 0 and 1 (0% and 100%)",
        "c.yaml: upstreams.demo.max_ejection_time: must not be shorter than ejection_time",
    ]


def test_an_upstream_needs_a_url_or_targets() -> None:
    assert problems_of(upstream(timeout="1s")) == ["c.yaml: upstreams.demo.url: is required"]


def test_the_targets_of_one_upstream_speak_one_scheme() -> None:
    assert problems_of(upstream(targets=["http://a:1", "https://b:2"])) == [
        "c.yaml: upstreams.demo.targets: must all be http:// or all https:// (they share `tls`)"
    ]
