"""GCRA buckets: a burst of the limit, then one per interval; in memory and in a real Redis,
where concurrent takes from many clients still let exactly the limit through; a Redis outage
falls back to this process's buckets and says so once."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from gateway.limits.gcra import MemoryGcra, RedisGcra, create_gcra
from tests.support.gateways import FakeClock
from tests.support.processes import free_port

REDIS_URL = "redis://127.0.0.1:6379/11"


async def test_a_burst_of_the_limit_then_one_per_interval() -> None:
    clock = FakeClock()
    buckets = MemoryGcra(clock=clock)
    decisions = [await buckets.take("k", 10, 60.0) for _ in range(11)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False]
    assert [d.remaining for d in decisions[:10]] == list(range(9, -1, -1))
    refused = decisions[-1]
    assert refused.retry_after == pytest.approx(6.0)  # one request's worth: 60 s / 10
    assert refused.reset_after == pytest.approx(60.0)
    clock.advance(5.9)
    assert not (await buckets.take("k", 10, 60.0)).allowed
    clock.advance(0.1)
    assert (await buckets.take("k", 10, 60.0)).allowed
    assert not (await buckets.take("k", 10, 60.0)).allowed
    assert (await buckets.take("other", 10, 60.0)).allowed  # keys are apart


async def test_a_quiet_key_refills_to_the_limit_and_no_further() -> None:
    clock = FakeClock()
    buckets = MemoryGcra(clock=clock)
    for _ in range(10):
        await buckets.take("k", 10, 1.0)
    clock.advance(3600)
    allowed = [(await buckets.take("k", 10, 1.0)).allowed for _ in range(11)]
    assert allowed == [True] * 10 + [False]


@pytest.mark.redis
async def test_redis_buckets_let_exactly_the_limit_through_a_concurrent_burst() -> None:
    clients = [RedisGcra(REDIS_URL) for _ in range(4)]  # as four processes would
    for client in clients:
        await client.open()
    key = f"gw:test:{uuid.uuid4().hex}"
    try:
        decisions = await asyncio.gather(*(clients[i % 4].take(key, 10, 60.0) for i in range(100)))
        assert sum(d.allowed for d in decisions) == 10
        assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))
        refused = [d for d in decisions if not d.allowed]
        assert all(5.0 < d.retry_after <= 6.0 for d in refused)
        assert all(50.0 < d.reset_after <= 60.0 for d in refused)
    finally:
        for client in clients:
            await client.close()


@pytest.mark.redis
async def test_a_burst_larger_than_the_connection_pool_does_not_fail_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Hundreds of requests at once from one process: a pool that refused the ones over its
    # size (redis-py's MaxConnectionsError) would send them to this process's own buckets,
    # which let the limit through a second time.
    buckets = RedisGcra(REDIS_URL)
    await buckets.open()
    key = f"gw:test:{uuid.uuid4().hex}"
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.limits.gcra"):
            decisions = await asyncio.gather(*(buckets.take(key, 10, 60.0) for _ in range(400)))
        assert sum(d.allowed for d in decisions) == 10
        assert not [r for r in caplog.records if r.name == "gateway.limits.gcra"]
    finally:
        await buckets.close()


@pytest.mark.redis
async def test_redis_buckets_refill_at_the_rate() -> None:
    buckets = RedisGcra(REDIS_URL)
    await buckets.open()
    key = f"gw:test:{uuid.uuid4().hex}"
    try:
        assert [(await buckets.take(key, 2, 0.4)).allowed for _ in range(3)] == [
            True,
            True,
            False,
        ]
        await asyncio.sleep(0.25)  # one interval (0.2 s) has passed
        assert [(await buckets.take(key, 2, 0.4)).allowed for _ in range(2)] == [True, False]
    finally:
        await buckets.close()


async def test_a_redis_outage_falls_back_to_this_process_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    buckets = create_gcra(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    assert isinstance(buckets, RedisGcra)
    await buckets.open()
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.limits.gcra"):
            allowed = [(await buckets.take("k", 3, 60.0)).allowed for _ in range(5)]
        assert allowed == [True, True, True, False, False]  # still limited, here
        warnings = [r for r in caplog.records if r.name == "gateway.limits.gcra"]
        assert len(warnings) == 1 and "Redis unavailable" in warnings[0].getMessage()
    finally:
        await buckets.close()


def test_without_a_redis_url_the_buckets_are_this_processs() -> None:
    assert isinstance(create_gcra(""), MemoryGcra)
