"""Whether a target should get traffic: passive health (what its real requests show) and
active checks (a GET on a health path, on a timer).

Passive: a refused connection ejects a target at once, other failures (reset, timeout, broken
response) after `max_failures` in a row. An ejection lasts `ejection_time`, doubling (up to
`max_ejection_time`) each time the target fails again right after one; when it ends, one request
at a time is let through as a probe, and the first that succeeds brings the target back.

A target that is the only one of its upstream is never ejected (as nginx does with one server):
there is nowhere else to send its requests, and its real errors say more than a 503 would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp

from ..config import HealthCheckConfig

if TYPE_CHECKING:
    from .targets import Target

__all__ = ["ActiveChecks", "PassiveHealth"]

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False, kw_only=True)
class PassiveHealth:
    """One target's failures in a row, ejection and probing (see the module docstring)."""

    max_failures: int
    ejection_time: float
    max_ejection_time: float
    ejectable: bool = True
    clock: Callable[[], float] = time.monotonic
    failures: int = field(default=0, init=False)
    # 0.0: not ejected. Past: the back-off is over and a probe may go.
    ejected_until: float = field(default=0.0, init=False)
    ejections_in_a_row: int = field(default=0, init=False)
    probing: bool = field(default=False, init=False)

    @property
    def ejected(self) -> bool:
        return self.ejected_until != 0.0

    def admits(self) -> bool:
        """Whether a request may go to the target now."""
        if not self.ejected_until:
            return True
        return not self.probing and self.clock() >= self.ejected_until

    def begin(self) -> bool:
        """A request goes to the target; True when it is the probe of an ejected one."""
        if self.ejected_until:
            self.probing = True
            return True
        return False

    def succeeded(self, probe: bool) -> bool:
        """The target answered; True when that brought it back. Only the probe's answer does:
        a request sent before the ejection says nothing about the target now."""
        if self.ejected_until and not probe:
            return False
        self.failures = 0
        if not self.ejected_until:
            return False
        self.ejected_until, self.ejections_in_a_row, self.probing = 0.0, 0, False
        return True

    def failed(self, probe: bool, *, refused: bool) -> bool:
        """The target failed a request; True when that ejects it (again)."""
        if probe:
            self.probing = False
        if not self.ejectable:
            return False
        if self.ejected_until and not probe:
            return False  # already out; a failure of a request sent before says nothing new
        self.failures += 1
        if not (refused or probe or self.failures >= self.max_failures):
            return False
        self.failures = 0
        self.ejections_in_a_row += 1
        back_off = min(
            self.max_ejection_time, self.ejection_time * 2 ** (self.ejections_in_a_row - 1)
        )
        self.ejected_until = self.clock() + back_off
        return True

    def retry_after(self) -> float:
        """Seconds until the target may be tried again (0 when it may now)."""
        return max(0.0, self.ejected_until - self.clock()) if self.ejected_until else 0.0


class ActiveChecks:
    """GET `health.path` on every target each `interval`, on a fresh connection; a target that
    does not answer `health.expect` within `health.timeout` is marked unhealthy until it does."""

    def __init__(
        self,
        upstream: str,
        health: HealthCheckConfig,
        targets: Sequence[Target],
        *,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        self._upstream = upstream
        self._health = health
        # The same verification as the requests' connections (https:// targets), against
        # the same name: `tls.server_name` when set, else the URL's host.
        self._tls = tls
        self._server_name = server_name if tls is not None else None
        self._targets = tuple(targets)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),
            connector=aiohttp.TCPConnector(force_close=True, ssl=self._tls or True),
            timeout=aiohttp.ClientTimeout(total=self._health.timeout),
        )
        self._task = asyncio.create_task(self._run(), name=f"health-checks-{self._upstream}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check_all(self) -> None:
        """One round: every target checked at once."""
        await asyncio.gather(*(self._check(target) for target in self._targets))

    async def _run(self) -> None:
        while True:
            await self.check_all()
            await asyncio.sleep(self._health.interval)

    async def _check(self, target: Target) -> None:
        assert self._session is not None  # noqa: S101 - started before running
        url = target.url.with_path(target.prefix + self._health.path)
        try:
            async with self._session.get(
                url, allow_redirects=False, server_hostname=self._server_name
            ) as response:
                passed = response.status == self._health.expect
                outcome = f"answered {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            passed, outcome = False, f"failed ({type(exc).__name__})"
        if passed != target.checked_healthy:
            if passed:
                log.info("upstream %s target %s passes its health check", self._upstream, target)
            else:
                log.warning(
                    "upstream %s target %s fails its health check: %s %s",
                    self._upstream,
                    target,
                    self._health.path,
                    outcome,
                )
            target.set_checked(passed)
