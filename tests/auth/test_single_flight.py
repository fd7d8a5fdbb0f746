"""SingleFlight: one call per key however many ask at once, shielded from callers that leave."""

from __future__ import annotations

import asyncio

import pytest

from gateway.auth.single_flight import SingleFlight
from tests.support.gateways import FakeClock


class Counted:
    """A call that counts its runs and waits until released."""

    def __init__(self, result: str = "pair", error: Exception | None = None) -> None:
        self.runs = 0
        self.release = asyncio.Event()
        self.result = result
        self.error = error

    async def __call__(self) -> str:
        self.runs += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return f"{self.result}-{self.runs}"


async def test_four_hundred_concurrent_callers_share_one_call() -> None:
    flight: SingleFlight[str, str] = SingleFlight(remember=0)
    call = Counted()
    waiters = [asyncio.create_task(flight.run("token", call)) for _ in range(400)]
    await asyncio.sleep(0)
    call.release.set()
    assert await asyncio.gather(*waiters) == ["pair-1"] * 400
    assert call.runs == 1 and flight.calls == 1


async def test_different_keys_run_separately() -> None:
    flight: SingleFlight[str, str] = SingleFlight(remember=0)
    call = Counted()
    call.release.set()
    results = await asyncio.gather(flight.run("a", call), flight.run("b", call))
    assert list(results) == ["pair-1", "pair-2"]


async def test_a_caller_that_goes_away_does_not_cancel_the_call() -> None:
    flight: SingleFlight[str, str] = SingleFlight(remember=0)
    call = Counted()
    first = asyncio.create_task(flight.run("token", call))
    second = asyncio.create_task(flight.run("token", call))
    await asyncio.sleep(0)
    first.cancel()  # the client that started the refresh disconnects
    await asyncio.sleep(0)
    call.release.set()
    assert await second == "pair-1"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert call.runs == 1


async def test_a_failure_reaches_every_waiter_and_is_not_remembered() -> None:
    flight: SingleFlight[str, str] = SingleFlight(remember=10)
    failing = Counted(error=PermissionError("refused"))
    waiters = [asyncio.create_task(flight.run("token", failing)) for _ in range(3)]
    await asyncio.sleep(0)
    failing.release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert [type(r) for r in results] == [PermissionError] * 3
    working = Counted()
    working.release.set()
    assert await flight.run("token", working) == "pair-1"  # tried again, not the old failure


async def test_a_success_is_remembered_for_a_while_then_forgotten() -> None:
    clock = FakeClock()
    flight: SingleFlight[str, str] = SingleFlight(remember=10, clock=clock)
    call = Counted()
    call.release.set()
    assert await flight.run("token", call) == "pair-1"
    clock.advance(9.9)
    assert await flight.run("token", call) == "pair-1"  # a late request of the same burst
    clock.advance(0.2)
    assert await flight.run("token", call) == "pair-2"
    assert call.runs == 2


async def test_remembered_results_are_bounded() -> None:
    clock = FakeClock()
    flight: SingleFlight[int, str] = SingleFlight(remember=60, max_remembered=3, clock=clock)
    call = Counted()
    call.release.set()
    for key in range(5):
        await flight.run(key, call)
        await asyncio.sleep(0)  # the done callback runs
    assert list(flight._done) == [2, 3, 4]


async def test_close_cancels_calls_in_flight() -> None:
    flight: SingleFlight[str, str] = SingleFlight(remember=10)
    call = Counted()
    waiter = asyncio.create_task(flight.run("token", call))
    await asyncio.sleep(0)
    await flight.close()
    with pytest.raises(asyncio.CancelledError):
        await waiter
