"""Brute-force protection: failed logins are limited per user and address, in process or in Redis,
before any password hashing."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import uuid
from typing import Any

import pytest

from gateway.appkeys import PASSWORDS, STORE
from gateway.errors import StorageUnavailable
from tests.support.errors import error_body
from tests.support.gateways import Gateway, GatewayFactory
from tests.support.processes import free_port

REDIS_URL = "redis://127.0.0.1:6379/0"


def limits(**overrides: Any) -> dict[str, Any]:
    return {
        "window": "15m",
        "per_user_and_address": 3,
        "per_user": 6,
        "per_address": 8,
        **overrides,
    }


async def attempt(gw: Gateway, username: str, password: str, address: str = "") -> tuple[int, Any]:
    headers = {"X-Forwarded-For": address} if address else {}
    resp = await gw.client.post(
        "/user/login", json={"username": username, "password": password}, headers=headers
    )
    return resp.status, (resp.headers.get("Retry-After"), await resp.json())


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def limited(request: pytest.FixtureRequest, start_gateway: GatewayFactory) -> Gateway:
    redis_url = REDIS_URL if request.param == "redis" else ""
    gw: Gateway = await start_gateway(
        rate_limits=limits(redis_url=redis_url),
        server={"trusted_proxies": ["127.0.0.0/8"]},  # lets tests speak from several addresses
    )
    return gw


def name() -> str:
    return f"u{uuid.uuid4().hex[:12]}"  # fresh counters in a shared Redis


async def new_user(gw: Gateway) -> str:
    """A user with a fresh name and the password `right-password`."""
    user = name()
    await gw.add_user(user, "right-password")
    return user


def address() -> str:
    """A fresh client address (sent as X-Forwarded-For by a trusted proxy): counters in Redis
    outlive a test, so no two tests may share one."""
    return str(ipaddress.IPv4Address("198.18.0.0") + random.randrange(2**17))


async def test_failures_per_user_and_address_are_limited(limited: Gateway) -> None:
    attacker = address()
    owner = address()
    user = await new_user(limited)
    for _ in range(3):
        assert (await attempt(limited, user, "wrong", attacker))[0] == 401
    status, (retry_after, body) = await attempt(limited, user, "right-password", attacker)
    assert status == 429
    assert body == error_body(
        429, "Too Many Requests", f"Too many failed logins; try again in {retry_after} seconds"
    )
    assert 800 < int(retry_after) <= 900
    # The user's own address is not locked out by someone else's failures.
    assert (await attempt(limited, user, "right-password", owner))[0] == 200


async def test_limited_attempts_are_refused_before_hashing(limited: Gateway) -> None:
    attacker = address()
    user = await new_user(limited)
    for _ in range(3):
        await attempt(limited, user, "wrong", attacker)
    passwords = limited.app[PASSWORDS]
    hashed: list[str] = []
    real_verify, real_dummy = passwords.verify, passwords.verify_dummy

    async def counting_verify(password_hash: str, password: str) -> bool:
        hashed.append(password)
        return await real_verify(password_hash, password)

    async def counting_dummy(password: str) -> None:
        hashed.append(password)
        await real_dummy(password)

    passwords.verify = counting_verify  # type: ignore[method-assign]
    passwords.verify_dummy = counting_dummy  # type: ignore[method-assign]
    for _ in range(5):
        assert (await attempt(limited, user, "guess", attacker))[0] == 429
    assert hashed == []


async def test_success_resets_the_user_counter(limited: Gateway) -> None:
    client = address()
    user = await new_user(limited)
    for _ in range(2):
        await attempt(limited, user, "wrong", client)
    assert (await attempt(limited, user, "right-password", client))[0] == 200
    for _ in range(2):  # two more failures are allowed again
        assert (await attempt(limited, user, "wrong", client))[0] == 401


async def test_guessing_one_user_from_many_addresses(limited: Gateway) -> None:
    known = address()
    stranger = address()
    user = await new_user(limited)
    assert (await attempt(limited, user, "right-password", known))[0] == 200  # known
    for _ in range(6):
        assert (await attempt(limited, user, "wrong", address()))[0] == 401
    assert (await attempt(limited, user, "wrong", stranger))[0] == 429
    # An address that logged in as this user recently is not locked out by the attack.
    assert (await attempt(limited, user, "right-password", known))[0] == 200


async def test_spraying_many_users_from_one_address(limited: Gateway) -> None:
    sprayer = address()
    other = address()
    for _ in range(8):
        assert (await attempt(limited, name(), "123456", other))[0] == 401
    assert (await attempt(limited, name(), "123456", other))[0] == 429
    assert (await attempt(limited, name(), "123456", sprayer))[0] == 401


async def test_successful_logins_never_count_against_their_address(limited: Gateway) -> None:
    """Many users behind one address (a NAT, an ingress) log in all day: each attempt is counted
    as it starts, and a success must take its address's count back."""
    shared = address()
    users = [await new_user(limited) for _ in range(3)]
    for _ in range(4):  # 12 successes against per_address: 8
        for user in users:
            assert (await attempt(limited, user, "right-password", shared))[0] == 200
    # The failures it did have still count: 8 wrong passwords reach the limit, as before.
    for _ in range(8):
        assert (await attempt(limited, name(), "wrong", shared))[0] == 401
    assert (await attempt(limited, users[0], "right-password", shared))[0] == 429


BURST = 300


async def burst(gw: Gateway, user: str, addresses: list[str]) -> list[int]:
    """BURST wrong passwords at once from `addresses` (in turn), the right one in the middle."""
    passwords = ["wrong"] * BURST
    passwords[BURST // 2] = "right-password"
    results = await asyncio.gather(
        *(
            attempt(gw, user, password, addresses[i % len(addresses)])
            for i, password in enumerate(passwords)
        )
    )
    return [status for status, _ in results]


@pytest.mark.parametrize("spread", ["one address", "many addresses"])
async def test_a_concurrent_burst_gets_no_more_verdicts_than_the_limit(
    limited: Gateway, spread: str
) -> None:
    # Before, the limit was checked before hashing and the failure recorded after it, so every
    # attempt of a burst passed the check and the right password inside it logged in.
    user = await new_user(limited)
    addresses = [address()] if spread == "one address" else [address() for _ in range(BURST)]
    limit = 3 if spread == "one address" else 6  # per user and address; per user
    statuses = await burst(limited, user, addresses)
    verdicts = [s for s in statuses if s in (200, 401)]
    # Exactly the limit: each reservation is one atomic step, and none is taken back (no
    # attempt of the burst ends without a verdict).
    assert len(verdicts) == limit, sorted(set(statuses))
    assert 200 not in statuses
    assert statuses.count(429) == BURST - limit
    assert set(statuses) <= {401, 429}


async def test_an_attempt_without_a_verdict_is_not_counted(limited: Gateway) -> None:
    # The database was unavailable: the attempt learned nothing, so it does not use up the limit.
    user, client = await new_user(limited), address()
    store = limited.app[STORE]
    real = store.get_user_by_name

    async def unavailable(username: str) -> Any:
        raise StorageUnavailable()

    store.get_user_by_name = unavailable  # type: ignore[method-assign]
    for _ in range(5):
        assert (await attempt(limited, user, "wrong", client))[0] == 503
    store.get_user_by_name = real  # type: ignore[method-assign]
    for _ in range(3):
        assert (await attempt(limited, user, "wrong", client))[0] == 401
    assert (await attempt(limited, user, "right-password", client))[0] == 429


async def test_counters_expire_after_the_window(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(rate_limits=limits(window="1s"))
    user = await new_user(gw)
    for _ in range(3):
        await attempt(gw, user, "wrong")
    assert (await attempt(gw, user, "right-password"))[0] == 429
    await asyncio.sleep(1.2)
    assert (await attempt(gw, user, "right-password"))[0] == 200


@pytest.mark.redis
async def test_replicas_share_counters_through_redis(start_gateway: GatewayFactory) -> None:
    trusted = {"trusted_proxies": ["127.0.0.0/8"]}
    first: Gateway = await start_gateway(rate_limits=limits(redis_url=REDIS_URL), server=trusted)
    second: Gateway = await start_gateway(rate_limits=limits(redis_url=REDIS_URL), server=trusted)
    user, client = await new_user(first), address()
    assert (await attempt(first, user, "wrong", client))[0] == 401
    assert (await attempt(second, user, "wrong", client))[0] == 401
    assert (await attempt(first, user, "wrong", client))[0] == 401
    assert (await attempt(second, user, "right-password", client))[0] == 429


async def test_redis_outage_fails_open(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(
        rate_limits=limits(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    )
    user = await new_user(gw)
    for _ in range(5):
        assert (await attempt(gw, user, "wrong"))[0] == 401
    assert (await attempt(gw, user, "right-password"))[0] == 200


async def test_limits_can_be_switched_off(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(
        rate_limits=limits(per_user_and_address=0, per_user=0, per_address=0)
    )
    user = await new_user(gw)
    for _ in range(12):
        assert (await attempt(gw, user, "wrong"))[0] == 401
