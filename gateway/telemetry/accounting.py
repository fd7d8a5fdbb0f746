"""Where every request is counted and logged, whoever answers it (the middleware, or the lane
of gateway.lane): in flight, in the drain, then its metrics and its access line."""

from __future__ import annotations

import time

from aiohttp import web

from ..draining import Drain
from ..request_keys import (
    BEFORE_UPSTREAM,
    MID_RESPONSE,
    PROGRESS,
    ROUTE_NAME,
    STARTED,
    learned,
    noted,
)
from .access_log import AccessLog
from .metrics import GatewayMetrics

__all__ = ["CLIENT_CLOSED_REQUEST", "RequestAccounting", "how_far"]

# nginx's "client closed request": the client went away before it had the whole answer. Never a
# 500 and never an upstream error; the access line says how far the request had got.
CLIENT_CLOSED_REQUEST = 499


def how_far(request: web.BaseRequest, bytes_sent: int) -> str:
    """How far a request had got when its client went away: bytes of the response sent means
    mid-response, whatever the proxy last said."""
    if bytes_sent:
        return MID_RESPONSE
    progress: str = learned(request).get(PROGRESS) or BEFORE_UPSTREAM
    return progress


class RequestAccounting:
    def __init__(self, metrics: GatewayMetrics, access_log: AccessLog, drain: Drain) -> None:
        self._metrics = metrics
        self._access_log = access_log
        self._drain = drain

    def begin(self, request: web.BaseRequest) -> float:
        """The request is being answered: when it started."""
        started = self.started(request)
        self.enter()
        return started

    def end(
        self, request: web.BaseRequest, status: int, started: float, aborted: str | None
    ) -> None:
        """It is answered (or its client went away: `aborted` says how far it got)."""
        self.leave()
        self.answered(request, status, started, aborted)

    # The parts, for the lane (gateway.lane): an answer given without awaiting anything is
    # never seen in flight, so it skips `enter` and `leave`.

    @staticmethod
    def started(request: web.BaseRequest) -> float:
        started = noted(request)[STARTED] = time.perf_counter()
        return started

    def enter(self) -> None:
        """In flight: counted, and waited for by the drain."""
        self._metrics.in_flight.inc()
        self._drain.enter()

    def leave(self) -> None:
        self._metrics.in_flight.dec()
        self._drain.leave()

    def answered(
        self, request: web.BaseRequest, status: int, started: float, aborted: str | None
    ) -> None:
        """Its metrics and its access line."""
        seconds = time.perf_counter() - started
        route = learned(request).get(ROUTE_NAME) or "unmatched"
        self._metrics.record(route, request.method, status, seconds)
        self._access_log.write(request, status, seconds, aborted)
