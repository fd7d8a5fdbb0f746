"""Password hashing with argon2id, run on a bounded thread pool so logins never stall proxying.

The queue in front of the threads is bounded too: a login that finds `passwords.queue` others
waiting gets 503 at once, and one that waits `max_wait` (database.timeout) for a thread gets 503
then, so no login waits longer than that plus its own hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..config import PasswordConfig
from ..errors import LoginsBusy

__all__ = ["PasswordHasher"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class PasswordHasher:
    """argon2id hashing and verification off the event loop."""

    def __init__(self, config: PasswordConfig, *, max_wait: float = 5.0) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=config.time_cost,
            memory_cost=config.memory_kib,
            parallelism=config.parallelism,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )
        self._workers = config.workers
        self._queue = config.queue
        self._max_wait = max_wait
        self._waiting = 0
        # Held from submission until the thread is done (not until the caller stops waiting),
        # so a cancelled login cannot let more hashes pile up behind the threads.
        self._slots: asyncio.Semaphore | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._dummy_hash = ""

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="argon2")
        self._slots = asyncio.Semaphore(self._workers)
        # Unknown users are verified against this, so they take as long as known ones.
        self._dummy_hash = await self.hash(secrets.token_urlsafe(24))

    async def close(self) -> None:
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await self._run(self._verify_sync, password_hash, password)

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of a real verification; the answer is always no."""
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError):
            log.warning("stored password hash could not be verified (corrupt or unknown format)")
            return False

    async def _run(self, fn: Callable[..., _T], *args: str) -> _T:
        executor, slots = self._executor, self._slots
        if executor is None or slots is None:
            raise RuntimeError("PasswordHasher.start() was not awaited")
        if slots.locked():
            if self._waiting >= self._queue:
                raise LoginsBusy()
            self._waiting += 1
            try:
                async with asyncio.timeout(self._max_wait):
                    await slots.acquire()
            except TimeoutError:
                raise LoginsBusy() from None
            finally:
                self._waiting -= 1
        else:
            await slots.acquire()  # free: returns at once
        loop = asyncio.get_running_loop()
        try:
            job = executor.submit(fn, *args)
        except BaseException:
            slots.release()
            raise
        job.add_done_callback(lambda _: _release_soon(loop, slots))
        return await asyncio.wrap_future(job)


def _release_soon(loop: asyncio.AbstractEventLoop, slots: asyncio.Semaphore) -> None:
    """Give a thread's slot back from the thread that finished (the loop may be gone)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(slots.release)
