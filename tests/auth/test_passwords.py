"""Password hashing: argon2id with the configured cost, off the event loop."""

from __future__ import annotations

import asyncio
import time

from gateway.auth.passwords import PasswordHasher
from gateway.config import PasswordConfig
from tests.support.gateways import FAST_PASSWORDS, Gateway, GatewayFactory


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


# Unknown users cost a hash like known ones; the login limits would answer 429 first.
NO_LIMITS = {"per_user_and_address": 0, "per_user": 0, "per_address": 0}


async def test_a_full_hashing_queue_answers_503_at_once(start_gateway: GatewayFactory) -> None:
    # One thread, two waiting at most: of twelve logins at once, the ones past the queue are
    # answered 503 with Retry-After without waiting for any hash.
    slow = {**FAST_PASSWORDS, "memory_kib": 65536, "time_cost": 4, "workers": 1, "queue": 2}
    gw: Gateway = await start_gateway(passwords=slow, rate_limits=NO_LIMITS)

    async def login() -> tuple[int, float, str | None]:
        start = time.perf_counter()
        resp = await gw.client.post("/user/login", json={"username": "alice", "password": "no"})
        await resp.read()
        return resp.status, time.perf_counter() - start, resp.headers.get("Retry-After")

    one_hash = (await login())[1]
    results = await asyncio.gather(*(login() for _ in range(12)))
    busy = [r for r in results if r[0] == 503]
    assert sorted({r[0] for r in results}) == [401, 503]
    assert len(busy) >= 12 - 3, results  # one hashing, two waiting
    assert all(r[2] == "1" for r in busy)
    assert max(r[1] for r in busy) < one_hash, (one_hash, busy)


async def test_no_login_waits_longer_than_the_database_timeout_for_a_thread(
    start_gateway: GatewayFactory, database_url: str
) -> None:
    slow = {**FAST_PASSWORDS, "memory_kib": 65536, "time_cost": 4, "workers": 1, "queue": 100}
    gw: Gateway = await start_gateway(
        passwords=slow, database={"url": database_url, "timeout": "0.3s"}, rate_limits=NO_LIMITS
    )

    async def login() -> tuple[int, float]:
        start = time.perf_counter()
        resp = await gw.client.post("/user/login", json={"username": "alice", "password": "no"})
        body = await resp.json()
        if resp.status == 503:
            assert body["message"] == "Too many logins at once, try again shortly"
        return resp.status, time.perf_counter() - start

    one_hash = (await login())[1]
    results = await asyncio.gather(*(login() for _ in range(10)))
    assert {status for status, _ in results} == {401, 503}, results
    # The bound: the wait for a thread (0.3 s) plus one hash, with room for a loaded machine.
    assert max(seconds for _, seconds in results) < 0.3 + one_hash * 3 + 0.5, (one_hash, results)
