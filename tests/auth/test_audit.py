"""The audit trail of the gateway process, on SQLite and MariaDB: each kind the HTTP side writes
reaches both sinks (the gateway.audit log stream and audit_events), never with a password or a
token, and a table that cannot be written fails no login."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gateway.appkeys import AUDIT, METRICS, STORE
from gateway.storage import AuditEvent
from tests.support.cookies import FETCH, Jar, log_in_by_form, origin_of
from tests.support.gateways import Gateway, GatewayFactory, bearer_of

PASSWORD = "123456"


@pytest.fixture
async def audited(start_gateway: GatewayFactory) -> Gateway:
    gw: Gateway = await start_gateway(rate_limits={"per_user_and_address": 3})
    await gw.add_user("guang", PASSWORD)
    return gw


def logged(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.__dict__["audit"] for r in caplog.records if r.name == "gateway.audit"]


async def stored(gw: Gateway) -> list[AuditEvent]:
    await gw.app[AUDIT].flush()
    return await gw.app[STORE].list_audit_events()


async def login(gw: Gateway, username: str, password: str) -> int:
    resp = await gw.client.post(
        "/user/login",
        json={"username": username, "password": password},
        headers={"User-Agent": "audit-test/1"},
    )
    return resp.status


async def test_each_kind_reaches_the_log_and_the_table(
    audited: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gw = audited
    caplog.set_level(logging.INFO, logger="gateway.audit")
    first = await gw.login()
    second = await gw.login()
    sessions = await (await gw.client.get("/user/sessions", headers=bearer_of(second))).json()
    other = next(s["id"] for s in sessions["sessions"] if not s["current"])
    assert (
        await gw.client.delete(f"/user/sessions/{other}", headers=bearer_of(second))
    ).status == 200
    # Reuse: the first rotation succeeds, the same token again (after the grace) is theft.
    third = await gw.login()
    rotated = await gw.client.post("/user/refresh", json={"refresh_token": third["refresh_token"]})
    assert rotated.status == 200
    gw.clock.advance(11)
    reused = await gw.client.post("/user/refresh", json={"refresh_token": third["refresh_token"]})
    assert reused.status == 401
    assert (await gw.client.post("/user/logout", headers=bearer_of(second))).status == 200
    fourth = await gw.login()
    everywhere = await gw.client.post("/user/logout", json={"all": True}, headers=bearer_of(fourth))
    assert everywhere.status == 200
    assert await login(gw, "guang", "wrong password") == 401
    assert await login(gw, "nobody", "secret-ish") == 401
    for _ in range(2):
        assert await login(gw, "guang", "wrong again") == 401
    assert await login(gw, "guang", PASSWORD) == 429

    expected = [
        ("login_succeeded", "success", ""),
        ("login_succeeded", "success", ""),
        ("session_ended", "success", "by user"),
        ("login_succeeded", "success", ""),
        ("refresh_reuse_detected", "refused", "session revoked"),
        ("logout", "success", ""),
        ("login_succeeded", "success", ""),
        ("logout", "success", "everywhere: 1 session(s)"),
        ("login_failed", "failure", "wrong_password"),
        ("login_failed", "failure", "unknown_user"),
        ("login_failed", "failure", "wrong_password"),
        ("login_failed", "failure", "wrong_password"),
        ("rate_limit_tripped", "refused", "login"),
    ]
    table = await stored(gw)
    assert [(e.kind, e.outcome, e.detail) for e in table] == expected
    assert [(e["kind"], e["outcome"], e["detail"]) for e in logged(caplog)] == expected
    by_kind = {e.kind: e for e in table}
    assert by_kind["login_succeeded"].username == "guang"
    assert by_kind["login_succeeded"].user_id == 1
    assert len(by_kind["login_succeeded"].session_id) == 32
    assert by_kind["login_failed"].address == "127.0.0.1"
    assert by_kind["login_failed"].user_agent == "audit-test/1"
    assert by_kind["refresh_reuse_detected"].user_id == 1
    assert by_kind["session_ended"].session_id == other
    # An unknown user's name is not kept: it may be a password typed in the wrong field.
    unknown = next(e for e in table if e.detail == "unknown_user")
    assert (unknown.username, unknown.user_id) == ("", None)
    assert all(e.request_id for e in table)

    secrets = [PASSWORD, "wrong password", "secret-ish", "wrong again"]
    secrets += [
        p[k] for p in (first, second, third, fourth) for k in ("access_token", "refresh_token")
    ]
    text = repr(table) + repr(logged(caplog)) + caplog.text
    assert not [s for s in secrets if s in text]


async def test_a_disabled_users_login_is_classed_as_such(audited: Gateway) -> None:
    await audited.app[STORE].set_disabled("guang", True)
    assert await login(audited, "guang", PASSWORD) == 401
    [event] = await stored(audited)
    assert (event.kind, event.detail, event.username) == ("login_failed", "user_disabled", "guang")


async def test_cookie_logout_and_reuse_by_cookie_are_audited(audited: Gateway) -> None:
    jar = Jar()
    assert (await log_in_by_form(audited.client, jar)).status == 303
    resp = await audited.client.post(
        "/user/logout", headers=jar.headers(FETCH, {"Origin": origin_of(audited.client)})
    )
    assert resp.status == 200
    assert [e.kind for e in await stored(audited)] == ["login_succeeded", "logout"]


async def test_a_table_that_cannot_be_written_fails_no_login(
    audited: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    store = audited.app[STORE]
    await store.execute("DROP TABLE audit_events")  # type: ignore[attr-defined]
    assert await login(audited, "guang", PASSWORD) == 200
    assert await login(audited, "guang", "wrong") == 401
    await audited.app[AUDIT].flush()
    assert audited.app[METRICS].audit_failures.labels("database_unavailable").value == 2
    assert "not stored (database unavailable)" in caplog.text
    # The log stream still has both.
    assert [e["kind"] for e in logged(caplog)] == ["login_succeeded", "login_failed"]
