"""Sessions: rotation, grace, reuse detection, races, logout, lifetimes, pruning, migration."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.appkeys import SESSIONS, STORE
from gateway.storage import SCHEMA_VERSION, UserExists, create_store
from gateway.storage.sql import SqlStore
from tests.support.gateways import TEST_SECRET, Gateway, GatewayFactory, bearer_of
from tests.support.processes import (
    Processes,
    add_user_by_cli,
    env_for,
    free_port,
    wait_for_port,
)
from tests.support.wire import http


def claims(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return decoded


async def refresh(gw: Gateway, token: str) -> tuple[int, dict[str, Any]]:
    resp = await gw.client.post("/user/refresh", json={"refresh_token": token})
    return resp.status, await resp.json()


async def replay_after(
    gw: Gateway, seconds: float
) -> tuple[dict[str, Any], dict[str, Any], int, dict[str, Any]]:
    """Log in, refresh, and `seconds` later present the login's refresh token again: the login's
    tokens, the refresh's, and the replay's status and body."""
    first = await gw.login()
    _, second = await refresh(gw, first["refresh_token"])
    gw.clock.advance(seconds)
    status, replayed = await refresh(gw, first["refresh_token"])
    return first, second, status, replayed


async def protected_status(gw: Gateway, access_token: str) -> int:
    resp = await gw.client.get("/bbb", headers={"Authorization": f"Bearer {access_token}"})
    return resp.status


async def test_tokens_carry_the_session(gateway: Gateway) -> None:
    pair = await gateway.login()
    access, refresh_claims = claims(pair["access_token"]), claims(pair["refresh_token"])
    assert access["sid"] == refresh_claims["sid"]
    session = await gateway.app[STORE].get_session(access["sid"])
    assert session is not None
    assert session.current_jti == refresh_claims["jti"]
    assert session.revoked_at is None


async def test_rotation_retires_the_presented_token(gateway: Gateway) -> None:
    first = await gateway.login()
    status, second = await refresh(gateway, first["refresh_token"])
    assert status == 200
    assert claims(second["refresh_token"])["jti"] != claims(first["refresh_token"])["jti"]
    gateway.clock.advance(11)  # past the 10 s grace window
    status, _ = await refresh(gateway, second["refresh_token"])
    assert status == 200
    # The first token is two rotations old: presenting it is reuse.
    status, body = await refresh(gateway, first["refresh_token"])
    assert status == 401
    assert body["message"] == "Refresh token was already used; the session has been revoked"


async def test_grace_window_returns_the_current_head(gateway: Gateway) -> None:
    first, second, status, again = await replay_after(gateway, 5)
    assert status == 200
    # The same head, not a fork: both answers name one refresh token id.
    assert claims(again["refresh_token"])["jti"] == claims(second["refresh_token"])["jti"]
    session = await gateway.app[STORE].get_session(claims(first["refresh_token"])["sid"])
    assert session is not None and session.revoked_at is None
    assert session.current_jti == claims(second["refresh_token"])["jti"]
    assert await protected_status(gateway, again["access_token"]) == 200
    # The head still rotates normally afterwards.
    status, _ = await refresh(gateway, again["refresh_token"])
    assert status == 200


async def test_previous_token_after_the_window_revokes_the_session(gateway: Gateway) -> None:
    _, second, status, _ = await replay_after(gateway, 10.5)
    assert status == 401
    # The newest token dies with the session, and so does its access token.
    status, body = await refresh(gateway, second["refresh_token"])
    assert status == 401
    assert body["message"] == "Session has been revoked; log in again"
    assert await protected_status(gateway, second["access_token"]) == 401


async def test_grace_zero_treats_any_second_use_as_reuse(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(sessions={"reuse_grace": "0"}, demo_user=True)
    first = await gw.login()
    assert (await refresh(gw, first["refresh_token"]))[0] == 200
    assert (await refresh(gw, first["refresh_token"]))[0] == 401


async def test_reuse_is_logged_as_a_security_event_without_the_token(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    first = await gateway.login()
    await refresh(gateway, first["refresh_token"])
    gateway.clock.advance(60)
    with caplog.at_level(logging.INFO):
        await refresh(gateway, first["refresh_token"])
    events = [r for r in caplog.records if r.name == "gateway.security"]
    assert len(events) == 1
    message = events[0].getMessage()
    sid = claims(first["refresh_token"])["sid"]
    assert f"session_id={sid}" in message and "user_id=1" in message
    for record in caplog.records:
        assert first["refresh_token"] not in record.getMessage()
        assert first["access_token"] not in record.getMessage()


async def test_twenty_concurrent_refreshes_leave_one_head(gateway: Gateway) -> None:
    first = await gateway.login()
    results = await asyncio.gather(*(refresh(gateway, first["refresh_token"]) for _ in range(20)))
    assert [status for status, _ in results] == [200] * 20
    heads = {claims(body["refresh_token"])["jti"] for _, body in results}
    assert len(heads) == 1
    session = await gateway.app[STORE].get_session(claims(first["refresh_token"])["sid"])
    assert session is not None and session.revoked_at is None
    assert session.current_jti == heads.pop()
    assert session.previous_jti == claims(first["refresh_token"])["jti"]


async def test_concurrent_refreshes_across_two_gateway_processes(
    workdir: Path, database_url: str, processes: Processes
) -> None:
    upstream_port = free_port()
    ports = [free_port(), free_port()]
    base_env = env_for(
        database_url, JWT_SECRET=TEST_SECRET, UPSTREAM_URL=f"http://127.0.0.1:{upstream_port}"
    )
    add_user_by_cli(workdir, base_env, "guang", "12345678")
    for i, port in enumerate(ports):
        proc = processes.start(
            f"gateway{i}",
            ["-m", "gateway", "serve"],
            workdir,
            {**base_env, "GATEWAY_PORT": str(port)},
        )
        wait_for_port(port, proc)
    login_status, pair = http(
        "POST",
        f"http://127.0.0.1:{ports[0]}/user/login",
        {"username": "guang", "password": "12345678"},
    )
    assert login_status == 200

    def refresh_on(port: int) -> tuple[int, Any]:
        return http(
            "POST",
            f"http://127.0.0.1:{port}/user/refresh",
            {"refresh_token": pair["refresh_token"]},
        )

    results = await asyncio.gather(
        *(asyncio.to_thread(refresh_on, ports[i % 2]) for i in range(20))
    )
    statuses = [status for status, _ in results]
    assert statuses == [200] * 20, statuses
    heads = {claims(body["refresh_token"])["jti"] for _, body in results}
    assert len(heads) == 1

    store = create_store(database_url)
    await store.open()
    try:
        session = await store.get_session(claims(pair["refresh_token"])["sid"])
    finally:
        await store.close()
    assert session is not None and session.revoked_at is None
    assert session.current_jti in heads


async def test_logout_with_refresh_token(gateway: Gateway) -> None:
    pair = await gateway.login()
    resp = await gateway.client.post("/user/logout", json={"refresh_token": pair["refresh_token"]})
    assert resp.status == 200
    assert (await refresh(gateway, pair["refresh_token"]))[0] == 401
    assert await protected_status(gateway, pair["access_token"]) == 401  # this process: at once
    again = await gateway.client.post("/user/logout", json={"refresh_token": pair["refresh_token"]})
    assert again.status == 200  # already revoked: still success (RFC 7009)


async def test_logout_with_access_token(gateway: Gateway) -> None:
    pair = await gateway.login()
    other = await gateway.login()  # a second session of the same user stays alive
    resp = await gateway.client.post("/user/logout", headers=bearer_of(pair))
    assert resp.status == 200
    assert (await refresh(gateway, pair["refresh_token"]))[0] == 401
    assert await protected_status(gateway, other["access_token"]) == 200
    assert (await refresh(gateway, other["refresh_token"]))[0] == 200


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"json": {"refresh_token": "garbage"}},
        {"headers": {"Authorization": "Bearer garbage"}},
        {"headers": {"Authorization": "Basic Zm9vOmJhcg=="}},
    ],
)
async def test_logout_with_an_unknown_token_succeeds(
    gateway: Gateway, request_kwargs: dict[str, Any]
) -> None:
    resp = await gateway.client.post("/user/logout", **request_kwargs)
    assert resp.status == 200


@pytest.mark.parametrize(
    ("request_kwargs", "message"),
    [
        (
            {},
            "Send {\"refresh_token\": ...} as JSON, or the access token as 'Authorization: Bearer'",
        ),
        (
            {"data": b"nope", "headers": {"Content-Type": "application/json"}},
            "Request body is not valid JSON",
        ),
        ({"json": {"refresh_token": 3}}, "'refresh_token' must be a string, not a number"),
        ({"json": {}}, "'refresh_token' is required"),
    ],
)
async def test_malformed_logout_is_400(
    gateway: Gateway, request_kwargs: dict[str, Any], message: str
) -> None:
    resp = await gateway.client.post("/user/logout", **request_kwargs)
    assert resp.status == 400
    assert (await resp.json())["message"] == message


async def test_logout_reaches_other_replicas_within_the_poll_bound(
    start_gateway: GatewayFactory,
) -> None:
    poll = 0.2
    first: Gateway = await start_gateway(sessions={"revocation_poll": f"{poll}s"})
    second: Gateway = await start_gateway(sessions={"revocation_poll": f"{poll}s"})
    await first.add_user()
    pair = await first.login()
    assert await protected_status(second, pair["access_token"]) == 200
    await first.client.post("/user/logout", json={"refresh_token": pair["refresh_token"]})
    started = time.monotonic()
    while await protected_status(second, pair["access_token"]) == 200:
        assert time.monotonic() - started < poll * 10, "revocation never reached the replica"
        await asyncio.sleep(0.02)
    # Documented bound: one poll interval plus a query; generous slack for a loaded machine.
    assert time.monotonic() - started < poll * 10


async def test_absolute_lifetime_ends_a_continuously_refreshed_session(
    start_gateway: GatewayFactory,
) -> None:
    gw: Gateway = await start_gateway(
        tokens={"access_ttl": "1m", "refresh_ttl": "30m"},
        sessions={"max_lifetime": "1h"},
        demo_user=True,
    )
    pair = await gw.login()
    for _ in range(2):
        gw.clock.advance(20 * 60)
        status, pair = await refresh(gw, pair["refresh_token"])
        assert status == 200
    # 40 minutes in: the refresh token may live 20 more minutes, never past the session's hour.
    assert pair["refresh_expires_in"] == 20 * 60
    assert claims(pair["refresh_token"])["exp"] <= int(gw.clock()) + 20 * 60
    gw.clock.advance(19 * 60 + 30)
    assert pair["expires_in"] == 60
    status, pair = await refresh(gw, pair["refresh_token"])
    assert status == 200
    assert pair["expires_in"] == 30  # the access token stops with the session too
    gw.clock.advance(40)  # 10 s past the hour: the token is inside its leeway, the session is not
    status, body = await refresh(gw, pair["refresh_token"])
    assert (status, body["message"]) == (401, "Session has expired; log in again")


async def test_refresh_expiry_slides_with_use(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(tokens={"refresh_ttl": "1h"}, demo_user=True)
    pair = await gw.login()
    for _ in range(3):  # 3 x 50 min: longer than one refresh lifetime, kept alive by use
        gw.clock.advance(50 * 60)
        status, pair = await refresh(gw, pair["refresh_token"])
        assert status == 200
    gw.clock.advance(3600 + 31)  # stayed away longer than the refresh lifetime
    assert (await refresh(gw, pair["refresh_token"]))[0] == 401


async def test_revoking_all_sessions_of_a_user(gateway: Gateway) -> None:
    pairs = [await gateway.login() for _ in range(3)]
    store = gateway.app[STORE]
    assert await store.revoke_user_sessions(1, reason="revoked by admin", now=time.time()) == 3
    for pair in pairs:
        assert (await refresh(gateway, pair["refresh_token"]))[0] == 401
    sessions = await store.list_sessions(1)
    assert {s.revoked_reason for s in sessions} == {"revoked by admin"}


async def test_disabled_user_refresh_revokes_the_session(gateway: Gateway) -> None:
    pair = await gateway.login()
    await gateway.app[STORE].set_disabled("guang", True)
    status, body = await refresh(gateway, pair["refresh_token"])
    assert (status, body["message"]) == (401, "User no longer exists or is disabled")
    await gateway.app[STORE].set_disabled("guang", False)
    assert (await refresh(gateway, pair["refresh_token"]))[0] == 401  # the session stays dead


async def test_pruning_removes_only_dead_sessions(gateway: Gateway) -> None:
    store = gateway.app[STORE]
    live = await gateway.login()
    revoked = await gateway.login()
    await gateway.client.post("/user/logout", json={"refresh_token": revoked["refresh_token"]})
    assert await gateway.app[SESSIONS].prune() == 0  # revoked too recently: access tokens live
    gateway.clock.advance(3600)
    await refresh(gateway, live["refresh_token"])  # keep one session in use
    assert await gateway.app[SESSIONS].prune() == 1
    remaining = await store.list_sessions(1)
    assert [s.id for s in remaining] == [claims(live["refresh_token"])["sid"]]
    gateway.clock.advance(8 * 86400)  # the live one's refresh token has expired too
    assert await gateway.app[SESSIONS].prune() == 1
    assert await store.list_sessions(1) == []


async def test_migration_from_the_first_schema_keeps_users(database_url: str) -> None:
    store = create_store(database_url)
    assert isinstance(store, SqlStore)
    await store.open()
    try:
        # Build schema version 1 as the previous release left it.
        await store.execute("CREATE TABLE gateway_schema (version INTEGER NOT NULL)")
        for statement in store.migrations[0]:
            await store.execute(statement)
        await store.execute("INSERT INTO gateway_schema (version) VALUES (1)")
        await store.execute(
            "INSERT INTO gateway_users (username, password_hash, disabled, created_at, updated_at)"
            " VALUES ('guang', 'hash', 0, 1.0, 1.0)"
        )
        assert await store.migrate() == SCHEMA_VERSION
        user = await store.get_user_by_name("guang")
        assert user is not None
        assert (user.password_hash, user.disabled, user.roles) == ("hash", False, ())
        assert await store.list_sessions(user.id) == []
        with pytest.raises(UserExists):  # later migrations know the old rows
            await store.add_user("GUANG", "other")
    finally:
        await store.close()


async def test_a_login_past_max_per_user_ends_the_oldest_sessions(
    start_gateway: GatewayFactory,
) -> None:
    gw: Gateway = await start_gateway(sessions={"max_per_user": 3}, demo_user=True)
    pairs = []
    for _ in range(5):
        pairs.append(await gw.login())
        gw.clock.advance(1)  # each session is newer than the last
    for i, pair in enumerate(pairs):
        access = await gw.client.get("/bbb", headers=bearer_of(pair))
        assert access.status == (401 if i < 2 else 200), i
    assert (await gw.refresh(pairs[0])).status == 401
    assert (await gw.refresh(pairs[4])).status == 200
    user = await gw.app[STORE].get_user_by_name("guang")
    assert user is not None
    live = await gw.app[SESSIONS].live_sessions(user.id)
    assert len(live) == 3


async def test_concurrent_logins_on_two_gateways_leave_at_most_max_per_user(
    start_gateway: GatewayFactory,
) -> None:
    # Two apps on one database, as two processes would be: the trim is one statement, so
    # however the logins interleave, at most max_per_user sessions stay live.
    limits = {"per_user_and_address": 0, "per_user": 0, "per_address": 0}
    first: Gateway = await start_gateway(sessions={"max_per_user": 4}, rate_limits=limits)
    second: Gateway = await start_gateway(sessions={"max_per_user": 4}, rate_limits=limits)
    await first.add_user()
    answers = await asyncio.gather(
        *(
            gw.client.post("/user/login", json={"username": "guang", "password": "123456"})
            for gw in [first, second] * 20
        )
    )
    assert [a.status for a in answers] == [200] * 40
    user = await first.app[STORE].get_user_by_name("guang")
    assert user is not None
    # Exactly the newest four: every trim keeps the newest four of what exists when it runs
    # (created_at, then id: one total order), so none of the four overall is ever revoked.
    assert len(await first.app[SESSIONS].live_sessions(user.id)) == 4
