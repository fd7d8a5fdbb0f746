"""`routes[].rate_limit` in the config: its defaults, and the problems of bad values."""

from __future__ import annotations

from gateway.config import RouteRateLimit, parse_config

from .test_config import minimal, problems_of


def route(**settings: object) -> dict[str, object]:
    return minimal(routes=[{"path": "/aaa", "upstream": "demo", "auth": "public", **settings}])


def test_a_route_has_no_limit_unless_it_sets_one() -> None:
    assert parse_config(route(), environ={}).routes[0].rate_limit is None
    limited = parse_config(route(rate_limit={"requests": 10, "per": "1s"}), environ={})
    assert limited.routes[0].rate_limit == RouteRateLimit(requests=10, per=1.0, by="user")


def test_every_problem_of_a_rate_limit_is_reported_with_its_path() -> None:
    problems = problems_of(route(rate_limit={"requests": 0, "per": "soon", "by": "ip", "x": 1}))
    assert problems == [
        "c.yaml: routes[0].rate_limit.requests: 0 is outside 1..1000000000",
        "c.yaml: routes[0].rate_limit.per: 'soon' is not a duration like 30s, 15m, 7d or 1h30m",
        "c.yaml: routes[0].rate_limit.by: 'ip' must be user or address",
        "c.yaml: routes[0].rate_limit.x: unknown key",
    ]
