"""The circuit breaker: requests in flight and requests waiting for a connection, bounded."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.proxy.breaker import Breaker
from gateway.proxy.retry_budget import RESERVE, RetryBudget


@dataclass
class Fake:
    active: int = 0
    pending: int = 0
    saturated: bool = False


def test_a_target_at_its_limit_of_requests_in_flight_is_refused() -> None:
    breaker = Breaker(max_requests=2, max_pending=5)
    assert breaker.refusal(Fake(active=1)) is None
    assert breaker.refusal(Fake(active=2)) == "has 2 requests in flight"


def test_requests_waiting_for_a_connection_are_bounded_only_when_all_are_busy() -> None:
    breaker = Breaker(max_requests=100, max_pending=3)
    assert breaker.refusal(Fake(pending=3, saturated=False)) is None
    assert breaker.refusal(Fake(pending=2, saturated=True)) is None
    assert breaker.refusal(Fake(pending=3, saturated=True)) == (
        "has 3 requests waiting for a connection"
    )


def test_the_retry_budget_allows_a_share_of_requests_plus_a_reserve() -> None:
    budget = RetryBudget(0.2)
    retries = 0
    for _ in range(1000):
        budget.earn()
        if budget.spend():
            retries += 1
    assert retries <= 0.2 * 1000 + RESERVE
    assert retries >= 0.2 * 1000 - 1
    quiet = RetryBudget(0.2)
    assert [quiet.spend() for _ in range(4)] == [True, True, True, False]
