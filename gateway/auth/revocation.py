"""Which sessions are revoked, as this process knows it: reloaded from the database every few
seconds so checking an access token costs a set lookup, not a round trip."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

from ..errors import StorageUnavailable
from ..storage import SessionStore

__all__ = ["RevocationView"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RevocationView:
    """Revoked session ids within `window` seconds (the longest an access token can live)."""

    store: SessionStore
    _: KW_ONLY
    window: float
    poll_interval: float
    clock: Callable[[], float] = time.time
    _revoked: frozenset[str] = field(init=False, default=frozenset())
    # Revocations made by this process, kept so a reload that raced them cannot drop them.
    _local: dict[str, float] = field(init=False, default_factory=dict)
    _healthy: bool = field(init=False, default=True)

    def is_revoked(self, session_id: str) -> bool:
        return session_id in self._revoked

    def add(self, session_id: str) -> None:
        """Record a revocation this process just wrote, effective at once."""
        self._local[session_id] = self.clock()
        self._revoked = self._revoked | {session_id}

    async def reload(self) -> None:
        now = self.clock()
        since = now - self.window
        ids = await self.store.revoked_since(since)
        self._local = {sid: at for sid, at in self._local.items() if at >= since}
        self._revoked = frozenset(ids).union(self._local)

    async def run(self) -> None:
        """Reload forever; a database outage keeps the last known view (and says so once)."""
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.reload()
            except StorageUnavailable:
                if self._healthy:
                    log.warning("cannot reload revoked sessions; keeping the last known list")
                self._healthy = False
            else:
                if not self._healthy:
                    log.info("revoked sessions reloaded again")
                self._healthy = True
