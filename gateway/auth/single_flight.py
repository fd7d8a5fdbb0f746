"""One call per key at a time, its result shared by every caller that asks meanwhile and, for
a short while, by those who ask just after.

This is how a page loading twenty assets with one expired session cookie causes one refresh:
the requests that arrive while the refresh runs await it, and the ones the browser had queued
(six connections per host) and that arrive right after it get its result too, instead of
presenting an already rotated refresh token again.

The call runs in a task of its own, shielded from its callers: a client that goes away cancels
its own wait, never the call the others are waiting for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

__all__ = ["SingleFlight"]

K = TypeVar("K")
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Runs `call` once per key at a time and remembers a success for `remember` seconds
    (0: only callers during the call share it). Failures are shared, never remembered."""

    def __init__(
        self,
        *,
        remember: float,
        max_remembered: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._remember = remember
        self._max_remembered = max_remembered
        self._clock = clock
        self._running: dict[K, asyncio.Task[V]] = {}
        self._done: dict[K, tuple[V, float]] = {}
        self.calls = 0  # how many calls ran (for tests and the curious)

    async def run(self, key: K, call: Callable[[], Coroutine[Any, Any, V]]) -> V:
        # No await between looking and registering: a second caller always finds the first.
        remembered = self._done.get(key)
        if remembered is not None:
            if self._clock() < remembered[1]:
                return remembered[0]
            del self._done[key]
        task = self._running.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(call(), name="single-flight")
            self._running[key] = task
            self.calls += 1
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if task.cancelled():
            return
        if task.exception() is not None:  # retrieved here, raised to each waiter
            return
        if self._remember > 0:
            now, done = self._clock(), self._done
            # Entries expire in the order they were added: drop the expired ones from the
            # front, and the oldest when full, so results are not kept past their time.
            while done:
                oldest = next(iter(done))
                if len(done) < self._max_remembered and done[oldest][1] > now:
                    break
                del done[oldest]
            done.pop(key, None)
            done[key] = (task.result(), now + self._remember)

    async def close(self) -> None:
        """Cancel calls still running (the app is stopping) and forget every result."""
        running = list(self._running.values())
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        self._running.clear()
        self._done.clear()
