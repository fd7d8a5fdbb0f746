"""The audit trail: security events as structured records, to the `gateway.audit` log stream
and to the `audit_events` table.

Each record: time, kind, outcome, user id and name when known, session id, client address, user
agent, request id, and a detail that is a reason class or what changed, never a token or a
password. The log line is written at once; the table row is queued and written by a background
task, so a login never waits for it and never fails because of it: when the table cannot be
written (database down, queue full) the event stays in the log, a warning says so (once per
outage) and `gateway_audit_write_failures_total` counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from ..errors import StorageUnavailable, Unauthorized
from ..request_keys import REQUEST_ID
from ..storage import AuditEvent, AuditStore
from ..telemetry.metrics import GatewayMetrics
from .sessions import client_of
from .tokens import TokenService

__all__ = [
    "KEY_ROTATED",
    "KINDS",
    "LOGIN_FAILED",
    "LOGIN_SUCCEEDED",
    "LOGOUT",
    "PASSWORD_CHANGED",
    "RATE_LIMITED",
    "ROLES_CHANGED",
    "SESSION_ENDED",
    "USER_DELETED",
    "USER_DISABLED",
    "USER_ENABLED",
    "AuditTrail",
    "event_json",
    "record_now",
]

audit_log = logging.getLogger("gateway.audit")
log = logging.getLogger(__name__)

LOGIN_SUCCEEDED: Final = "login_succeeded"
LOGIN_FAILED: Final = "login_failed"
REFRESH_REUSE: Final = "refresh_reuse_detected"
LOGOUT: Final = "logout"
SESSION_ENDED: Final = "session_ended"
USER_DISABLED: Final = "user_disabled"
USER_ENABLED: Final = "user_enabled"
USER_DELETED: Final = "user_deleted"
PASSWORD_CHANGED: Final = "password_changed"  # noqa: S105 - an event kind
ROLES_CHANGED: Final = "roles_changed"
RATE_LIMITED: Final = "rate_limit_tripped"
KEY_ROTATED: Final = "key_rotated"
KINDS: Final = (
    LOGIN_SUCCEEDED,
    LOGIN_FAILED,
    REFRESH_REUSE,
    LOGOUT,
    SESSION_ENDED,
    USER_DISABLED,
    USER_ENABLED,
    USER_DELETED,
    PASSWORD_CHANGED,
    ROLES_CHANGED,
    RATE_LIMITED,
    KEY_ROTATED,
)
QUEUE_SIZE: Final = 10_000
_BATCH: Final = 100


def event_json(event: AuditEvent) -> dict[str, Any]:
    """The event as the log and `gateway audit list --json` show it."""
    fields = dataclasses.asdict(event)
    fields["time"] = datetime.fromtimestamp(event.at, UTC).isoformat(timespec="milliseconds")
    del fields["at"]
    return {"time": fields.pop("time"), **fields}


def _logged(event: AuditEvent) -> None:
    who = event.username or (f"user_id={event.user_id}" if event.user_id is not None else "-")
    detail = f" ({event.detail})" if event.detail else ""
    audit_log.info(
        "%s %s %s%s", event.kind, event.outcome, who, detail, extra={"audit": event_json(event)}
    )


async def record_now(store: AuditStore, event: AuditEvent) -> bool:
    """Log and store one event at once (the CLI); False, after saying why, when the table
    could not be written."""
    _logged(event)
    try:
        await store.add_audit_events([event])
    except StorageUnavailable:
        log.warning("audit: %s not stored (database unavailable); it is in the log", event.kind)
        return False
    return True


class AuditTrail:
    """The gateway process's audit writer: built by create_app, its task run by the app."""

    def __init__(
        self,
        store: AuditStore,
        metrics: GatewayMetrics,
        *,
        clock: Callable[[], float] = time.time,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._store = store
        self._failures = metrics.audit_failures
        self._clock = clock
        self._queue: asyncio.Queue[AuditEvent] = asyncio.Queue(queue_size)
        self._healthy = True
        self._running = False

    def record(
        self,
        kind: str,
        request: web.BaseRequest | None = None,
        *,
        outcome: str = "success",
        user_id: int | str | None = None,
        username: str = "",
        session_id: str = "",
        detail: str = "",
    ) -> None:
        """Log the event now and queue it for the table; never raises, never waits."""
        client = client_of(request) if request is not None else None
        event = AuditEvent(
            at=self._clock(),
            kind=kind,
            outcome=outcome,
            user_id=None if user_id is None else int(user_id),
            username=username,
            session_id=session_id,
            address=client.address if client else "",
            user_agent=client.user_agent if client else "",
            request_id=(request.get(REQUEST_ID) or "") if request is not None else "",
            detail=detail,
        )
        _logged(event)
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._failures.labels("queue_full").inc()

    def reuse_detected(self, request: web.BaseRequest, tokens: TokenService, token: str) -> None:
        """A refresh token presented again: its session is revoked by now."""
        user_id, session_id = None, ""
        with contextlib.suppress(Unauthorized):
            grant = tokens.verify_refresh(token)
            user_id, session_id = grant.user_id, grant.session_id
        self.record(
            REFRESH_REUSE,
            request,
            outcome="refused",
            user_id=user_id,
            session_id=session_id,
            detail="session revoked",
        )

    async def run(self) -> None:
        """Write queued events forever, a batch at a time, in order."""
        self._running = True
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < _BATCH and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                try:
                    await self._write(batch)
                finally:
                    for _ in batch:
                        self._queue.task_done()
        finally:
            self._running = False

    async def flush(self) -> None:
        """Wait until every queued event is written: by the writer task while it runs, else
        here (at shutdown, after the task is cancelled)."""
        if self._running:
            await self._queue.join()
            return
        batch: list[AuditEvent] = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
            self._queue.task_done()
        if batch:
            await self._write(batch)

    async def _write(self, batch: list[AuditEvent]) -> None:
        try:
            await self._store.add_audit_events(batch)
        except StorageUnavailable:
            self._failures.labels("database_unavailable").inc(len(batch))
            if self._healthy:
                log.warning(
                    "audit: %d event(s) not stored (database unavailable); they are in the "
                    "gateway.audit log",
                    len(batch),
                )
            self._healthy = False
            return
        if not self._healthy:
            log.info("audit: storing events again")
        self._healthy = True

    async def prune(self, retention: float) -> int:
        return await self._store.prune_audit_events(before=self._clock() - retention)
