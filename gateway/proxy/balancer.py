"""Which target of an upstream takes the next request.

round_robin: smooth weighted round robin (as nginx does it): over any run of requests each target
gets its weight's share, interleaved rather than in bursts. least_requests: the target with the
fewest requests in flight per unit of weight; ties go in turn, so idle targets share evenly.
Both skip targets that must not get traffic now (ejected, unhealthy, or already tried).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

__all__ = ["LeastRequests", "RoundRobin", "create_balancer"]


class Candidate(Protocol):
    @property
    def weight(self) -> int: ...

    @property
    def active(self) -> int: ...


T = TypeVar("T", bound=Candidate)


class RoundRobin(Generic[T]):
    """Smooth weighted round robin."""

    def __init__(self, targets: Sequence[T]) -> None:
        self._targets = tuple(targets)
        self._current = [0] * len(self._targets)
        self._equal = len({t.weight for t in self._targets}) == 1
        self._next = 0

    def pick(self, usable: Callable[[T], bool]) -> T | None:
        targets = self._targets
        if self._equal:
            # Equal weights: plain turns (the smooth variant would give the same order).
            count = len(targets)
            for step in range(count):
                index = (self._next + step) % count
                if usable(targets[index]):
                    self._next = index + 1
                    return targets[index]
            return None
        current = self._current
        best = -1
        total = 0
        for index, target in enumerate(targets):
            if not usable(target):
                continue
            current[index] += target.weight
            total += target.weight
            if best < 0 or current[index] > current[best]:
                best = index
        if best < 0:
            return None
        current[best] -= total
        return targets[best]


class LeastRequests(Generic[T]):
    """Fewest requests in flight per weight; ties in turn."""

    def __init__(self, targets: Sequence[T]) -> None:
        self._targets = tuple(targets)
        self._next = 0

    def pick(self, usable: Callable[[T], bool]) -> T | None:
        targets = self._targets
        count = len(targets)
        start = self._next
        self._next = (start + 1) % count
        best: T | None = None
        best_load = 0.0
        for step in range(count):
            target = targets[(start + step) % count]
            if not usable(target):
                continue
            load = target.active / target.weight
            if best is None or load < best_load:
                best, best_load = target, load
        return best


def create_balancer(name: str, targets: Sequence[T]) -> RoundRobin[T] | LeastRequests[T]:
    """The balancer a config's `balance` names."""
    if name == "least_requests":
        return LeastRequests(targets)
    return RoundRobin(targets)
