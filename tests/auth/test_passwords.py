"""Password hashing: argon2id with the configured cost, off the event loop."""

from __future__ import annotations

import asyncio
import time

from gateway.auth.passwords import PasswordHasher
from gateway.config import PasswordConfig


async def test_default_parameters_are_owasp_argon2id() -> None:
    hasher = PasswordHasher(PasswordConfig())
    await hasher.start()
    try:
        hashed = await hasher.hash("correct horse")
        assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
        assert await hasher.verify(hashed, "correct horse")
        assert not await hasher.verify(hashed, "wrong")
        assert not await hasher.verify("not-a-hash", "x")
        assert not hasher.needs_rehash(hashed)
    finally:
        await hasher.close()


async def test_weaker_stored_hashes_are_flagged_for_rehash() -> None:
    weak = PasswordHasher(PasswordConfig(memory_kib=8192, time_cost=1))
    strong = PasswordHasher(PasswordConfig())
    await weak.start()
    try:
        assert strong.needs_rehash(await weak.hash("pw"))
    finally:
        await weak.close()


async def test_hashing_does_not_block_the_event_loop() -> None:
    hasher = PasswordHasher(PasswordConfig(workers=2))
    await hasher.start()
    try:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.create_task(ticker())
        start = time.perf_counter()
        await asyncio.gather(*(hasher.hash(f"pw{i}") for i in range(6)))
        elapsed = time.perf_counter() - start
        task.cancel()
        # The loop kept turning while six hashes ran: a blocked loop would tick ~0 times.
        assert ticks > elapsed / 0.001 * 0.2, (ticks, elapsed)
    finally:
        await hasher.close()
