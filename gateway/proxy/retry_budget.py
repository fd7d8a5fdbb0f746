"""How many retries an upstream may add: a share of its requests, so that when targets fail,
retries cannot multiply the load of the outage (Finagle's and Envoy's retry budgets).

Each request earns `ratio` of a retry, each retry spends one; a small reserve lets a quiet
upstream retry its first failures too. Over any run of N requests, at most ratio x N + RESERVE
retries happen.
"""

from __future__ import annotations

from typing import Final

__all__ = ["RetryBudget"]

RESERVE: Final = 3.0


class RetryBudget:
    __slots__ = ("_ratio", "_tokens")

    def __init__(self, ratio: float) -> None:
        self._ratio = ratio
        self._tokens = RESERVE

    def earn(self) -> None:
        """One request was sent."""
        if self._tokens < RESERVE:
            self._tokens += self._ratio

    def spend(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
