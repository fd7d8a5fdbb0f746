"""Which failed upstream requests may be sent again, and to which target."""

from __future__ import annotations

from aiohttp import web

from .bodies import ClientBody
from .targets import Target, Targets

__all__ = ["resendable", "retry_target"]

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def resendable(request: web.Request, body: ClientBody | None) -> bool:
    """Whether a request that reached a target may be sent again: running it twice must be
    harmless (an idempotent method) and its body must not have been streamed (it has none)."""
    return body is None and request.method in _IDEMPOTENT


def retry_target(
    request: web.Request,
    targets: Targets,
    tried: list[Target],
    body: ClientBody | None,
    unsent: bool,
    retries_left: int,
) -> Target | None:
    """Where a failed request goes next, or None when it must not be retried.

    Only before any response byte came back (the caller's part): a request no byte of which
    was sent (no connection could be made) may go again whatever its method; one that was
    sent, only if resendable. Not past `retries`, not past the retry budget, and never to a
    target it tried."""
    if retries_left <= 0 or not (unsent or resendable(request, body)):
        return None
    target = targets.pick(tried)
    if target is None or not targets.budget.spend():
        return None
    return target
