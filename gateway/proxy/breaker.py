"""The circuit breaker of one target: a bounded number of requests in flight and of requests
waiting for a connection. Beyond either the request gets 503 at once rather than joining a
queue that grows for as long as the target is slow (Envoy's max_requests / max_pending)."""

from __future__ import annotations

from typing import Protocol

__all__ = ["Breaker"]


class _Guarded(Protocol):
    @property
    def active(self) -> int: ...

    @property
    def pending(self) -> int:
        """Requests waiting for one of its connections."""
        ...

    @property
    def saturated(self) -> bool:
        """Every connection is busy: a new request would wait."""
        ...


class Breaker:
    __slots__ = ("max_pending", "max_requests")

    def __init__(self, *, max_requests: int, max_pending: int) -> None:
        self.max_requests = max_requests
        self.max_pending = max_pending

    def refusal(self, target: _Guarded) -> str | None:
        """Why the target cannot take one more request now, or None when it can."""
        if target.active >= self.max_requests:
            return f"has {self.max_requests} requests in flight"
        if target.saturated and target.pending >= self.max_pending:
            return f"has {self.max_pending} requests waiting for a connection"
        return None
