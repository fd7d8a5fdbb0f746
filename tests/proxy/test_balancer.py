"""Balancing between the targets of an upstream: shares by weight, least requests in flight,
skipping targets that must not get traffic."""

from __future__ import annotations

import collections
from dataclasses import dataclass

from gateway.proxy.balancer import LeastRequests, RoundRobin, create_balancer


@dataclass(eq=False)
class Fake:
    name: str
    weight: int = 1
    active: int = 0
    up: bool = True


def usable(target: Fake) -> bool:
    return target.up


def test_round_robin_takes_turns_with_equal_weights() -> None:
    a, b, c = Fake("a"), Fake("b"), Fake("c")
    balancer = RoundRobin([a, b, c])
    picked = [balancer.pick(usable) for _ in range(6)]
    assert [t.name for t in picked if t] == ["a", "b", "c", "a", "b", "c"]


def test_round_robin_gives_each_target_its_weights_share_interleaved() -> None:
    a, b, c = Fake("a", weight=5), Fake("b", weight=1), Fake("c", weight=1)
    balancer = RoundRobin([a, b, c])
    picked = [balancer.pick(usable) for _ in range(70)]
    assert collections.Counter(t.name for t in picked if t) == {"a": 50, "b": 10, "c": 10}
    # Smooth: within one cycle of 7 the heavy target is not sent five in a row.
    first_cycle = "".join(t.name for t in picked[:7] if t)
    assert "aaaaa" not in first_cycle and sorted(first_cycle) == sorted("aaaaabc")


def test_round_robin_skips_what_is_not_usable_and_says_when_nothing_is() -> None:
    a, b, c = Fake("a"), Fake("b", up=False), Fake("c", weight=2)
    for balancer in (RoundRobin([a, b, c]), RoundRobin([a, b, Fake("d")])):
        assert all(balancer.pick(usable) is not b for _ in range(20))
    a.up = c.up = False
    assert RoundRobin([a, b, c]).pick(usable) is None


def test_least_requests_prefers_the_target_with_fewest_in_flight() -> None:
    a, b, c = Fake("a", active=5), Fake("b", active=1), Fake("c", active=3)
    balancer = LeastRequests([a, b, c])
    assert all(balancer.pick(usable) is b for _ in range(10))
    b.up = False
    assert balancer.pick(usable) is c


def test_least_requests_counts_in_flight_per_weight_and_shares_ties() -> None:
    heavy, light = Fake("heavy", weight=4, active=4), Fake("light", active=2)
    assert LeastRequests([light, heavy]).pick(usable) is heavy  # 1 per weight against 2
    idle = [Fake("a"), Fake("b"), Fake("c")]
    balancer = LeastRequests(idle)
    picked = collections.Counter(t.name for _ in range(30) if (t := balancer.pick(usable)))
    assert picked == {"a": 10, "b": 10, "c": 10}


def test_the_config_names_the_balancer() -> None:
    targets = [Fake("a")]
    assert isinstance(create_balancer("least_requests", targets), LeastRequests)
    assert isinstance(create_balancer("round_robin", targets), RoundRobin)
