"""Ending all of a user's sessions through the sessions code (admin actions)."""

from __future__ import annotations

from gateway.appkeys import SESSIONS, STORE
from tests.support.gateways import Gateway, bearer_of


async def test_ending_a_users_sessions_stops_their_tokens_at_once(gateway: Gateway) -> None:
    pairs = [await gateway.login() for _ in range(2)]
    assert await gateway.app[SESSIONS].end_user_sessions(1, "revoked by admin") == 2
    for pair in pairs:
        # No wait for the revocation poll: this process knows at once.
        resp = await gateway.client.get("/bbb", headers=bearer_of(pair))
        assert resp.status == 401
        resp = await gateway.refresh(pair)
        assert resp.status == 401
    sessions = await gateway.app[STORE].list_sessions(1)
    assert {s.revoked_reason for s in sessions} == {"revoked by admin"}
    assert await gateway.app[SESSIONS].end_user_sessions(1, "revoked by admin") == 0
