"""Cookie sessions through the proxy, against real databases and the real demo upstream:
navigations redirected to the login page and everything else 401, refresh inside the gateway
(one rotation for hundreds of concurrent requests), the CSRF rule, logout by cookie, the
gateway's cookies never forwarded, and Bearer clients exactly as before."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from gateway.appkeys import METRICS, STORE
from tests.support.cookies import (
    FETCH,
    NAVIGATE,
    Jar,
    log_in_by_form,
    origin_of,
    set_cookies,
)
from tests.support.errors import error_body
from tests.support.gateways import Gateway, GatewayFactory, bearer_of, route

ACCESS, REFRESH, CSRF = "__Host-gateway-access", "__Host-gateway-refresh", "__Host-gateway-csrf"
ROUTES = [
    route('/aaa', 'public', methods=['GET']),
    route('/echo/**', 'public'),
    route('/bbb', methods=['GET']),
    route('/whoami'),
    route('/ws'),
    # Protected and optional views of the echo endpoint, to see what reached the upstream.
    route('/private/**', strip_prefix='/private', add_prefix='/echo'),
    route('/maybe/**', 'optional', strip_prefix='/maybe', add_prefix='/echo'),
    route('/admin/**', roles=['admin'], strip_prefix='/admin', add_prefix='/echo'),
]  # fmt: skip


@pytest.fixture
async def gw(start_gateway: GatewayFactory) -> Gateway:
    gateway: Gateway = await start_gateway(routes=ROUTES, demo_user=True)
    return gateway


async def logged_in(gw: Gateway) -> Jar:
    jar = Jar()
    response = await log_in_by_form(gw.client, jar)
    assert response.status == 303, await response.text()
    return jar


def refreshes(gw: Gateway, outcome: str) -> float:
    return gw.app[METRICS].refreshes.labels(outcome).value


def unsafe(gw: Gateway) -> dict[str, str]:
    """What the gateway's own page sends with a fetch() POST."""
    return {**FETCH, "Origin": origin_of(gw.client)}


def echoed_header(body: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in body["headers"] if key.lower() == name.lower()]


# --- navigation versus API ------------------------------------------------------------------


async def test_a_navigation_without_a_session_goes_to_the_login_page(gw: Gateway) -> None:
    response = await gw.client.get("/bbb?tab=2", headers=NAVIGATE, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "/_gateway/login?rd=/bbb?tab%3D2"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(FETCH, id="fetch"),
        pytest.param({**FETCH, "Accept": "text/html"}, id="fetch accepting html"),
        pytest.param({**NAVIGATE, "Sec-Fetch-Dest": "iframe"}, id="iframe"),
        pytest.param({"Accept": "text/html", "X-Requested-With": "XMLHttpRequest",
                      "User-Agent": "Mozilla/5.0"}, id="xhr"),
        pytest.param({"Accept": "*/*", "User-Agent": "curl/8.5.0"}, id="curl"),
        pytest.param({}, id="api client"),
    ],
)  # fmt: skip
async def test_everything_else_gets_the_json_401_of_today(
    gw: Gateway, headers: dict[str, str]
) -> None:
    response = await gw.client.get("/bbb", headers=headers, allow_redirects=False)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'
    assert await response.json() == error_body(401, "Unauthorized", "Missing bearer token")


async def test_a_form_post_without_a_session_is_401_not_a_redirect(gw: Gateway) -> None:
    headers = {**NAVIGATE, "Origin": origin_of(gw.client), "Sec-Fetch-Site": "same-origin"}
    response = await gw.client.post("/private/x", data={"a": "1"}, headers=headers)
    assert response.status == 401


async def test_public_routes_never_redirect(gw: Gateway) -> None:
    response = await gw.client.get("/aaa", headers=NAVIGATE, allow_redirects=False)
    assert (response.status, await response.text()) == (200, "aaa")


# --- the session by cookie ------------------------------------------------------------------


async def test_the_form_login_sets_small_session_cookies_and_returns(gw: Gateway) -> None:
    jar = Jar()
    response = await log_in_by_form(gw.client, jar)
    assert response.status == 303
    assert response.headers["Location"] == "/bbb"
    assert response.headers["Cache-Control"] == "no-store"
    received = set_cookies(response)
    assert set(received) == {ACCESS, REFRESH}
    for cookie in received.values():
        assert {"httponly", "secure", "path", "samesite", "max-age"} <= set(cookie.attributes)
        assert cookie.attributes["samesite"] == "Lax"
        assert len(cookie.value) < 600  # a few hundred bytes
    assert len(jar.header()) < 1400  # all three cookies together
    page = await gw.client.get("/bbb", headers=jar.headers(NAVIGATE))
    assert (page.status, await page.text()) == (200, "bbb")


async def test_the_upstream_gets_the_same_identity_and_none_of_the_gateways_cookies(
    gw: Gateway,
) -> None:
    jar = await logged_in(gw)
    pair = await gw.login()
    by_bearer = await gw.client.get("/whoami", headers=bearer_of(pair))
    by_cookie = await gw.client.get("/whoami", headers=jar.headers(FETCH))
    assert by_cookie.status == 200
    assert await by_cookie.json() == await by_bearer.json()
    for path in ("/private/x", "/echo/x"):  # protected and public alike
        echoed = await gw.client.get(path, headers=jar.headers(FETCH, theme="dark", app_sid="s1"))
        body = await echoed.json()
        assert echoed_header(body, "Cookie") == ["theme=dark; app_sid=s1"], path
    only_ours = await gw.client.get("/private/x", headers=jar.headers(FETCH))
    assert echoed_header(await only_ours.json(), "Cookie") == []


async def test_a_valid_bearer_token_wins_over_cookies(gw: Gateway) -> None:
    jar = await logged_in(gw)  # guang
    await gw.add_user("alice", "correct horse")
    alice = await gw.login("alice", "correct horse")
    bearer = {"Authorization": f"Bearer {alice['access_token']}"}
    response = await gw.client.get("/whoami", headers=jar.headers(bearer))
    assert (await response.json())["username"] == "alice"
    assert "Set-Cookie" not in response.headers


async def test_a_bad_bearer_token_is_401_even_with_a_live_cookie_session(gw: Gateway) -> None:
    jar = await logged_in(gw)
    response = await gw.client.get(
        "/bbb", headers=jar.headers(NAVIGATE, {"Authorization": "Bearer spoiled"})
    )
    assert response.status == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_optional_routes_see_the_cookie_identity_or_nobody(gw: Gateway) -> None:
    jar = await logged_in(gw)
    known = await (await gw.client.get("/maybe/x", headers=jar.headers(FETCH))).json()
    assert echoed_header(known, "X-User-Name") == ["guang"]
    anonymous = await (await gw.client.get("/maybe/x", headers=NAVIGATE)).json()
    assert echoed_header(anonymous, "X-User-Name") == []


async def test_roles_apply_to_cookie_sessions(gw: Gateway) -> None:
    jar = await logged_in(gw)
    response = await gw.client.get("/admin/x", headers=jar.headers(NAVIGATE))
    assert response.status == 403
    assert (await response.json())["message"] == "Requires one of the roles: admin"


async def test_a_websocket_handshake_by_cookie_needs_our_origin(gw: Gateway) -> None:
    jar = await logged_in(gw)
    async with gw.client.ws_connect(
        "/ws", headers=jar.headers({"Origin": origin_of(gw.client)})
    ) as ws:
        assert (await ws.receive_json())["user_id"] == "1"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gw.client.ws_connect("/ws", headers=jar.headers({"Origin": "https://evil.example"}))
    assert refused.value.status == 403


# --- refresh inside the gateway -------------------------------------------------------------


async def test_an_expired_access_cookie_is_refreshed_and_forwarded(gw: Gateway) -> None:
    jar = await logged_in(gw)
    before = dict(jar.values)
    gw.clock.advance(1801)  # past the access token's 30 minutes (and inside its leeway)
    response = await gw.client.get("/bbb", headers=jar.headers(NAVIGATE))
    assert (response.status, await response.text()) == (200, "bbb")
    assert response.headers["Cache-Control"] == "no-store"  # no cache keeps a Set-Cookie
    received = jar.update(response)
    assert set(received) == {ACCESS, REFRESH}
    assert jar.values[ACCESS] != before[ACCESS] and jar.values[REFRESH] != before[REFRESH]
    assert refreshes(gw, "rotated") == 1
    quiet = await gw.client.get("/bbb", headers=jar.headers(FETCH))
    assert quiet.status == 200 and "Set-Cookie" not in quiet.headers


async def test_the_browser_dropping_the_expired_access_cookie_is_the_same(gw: Gateway) -> None:
    jar = await logged_in(gw)
    gw.clock.advance(1801)
    response = await gw.client.get("/bbb", headers=jar.without(ACCESS).headers(FETCH))
    assert response.status == 200 and set(jar.update(response)) == {ACCESS, REFRESH}


async def test_cookies_stay_the_same_size_across_refreshes(gw: Gateway) -> None:
    jar = await logged_in(gw)
    sizes = []
    for _ in range(5):
        gw.clock.advance(1801)
        response = await gw.client.get("/bbb", headers=jar.headers(FETCH))
        assert response.status == 200
        jar.update(response)
        sizes.append(len(jar.header()))
    assert max(sizes) - min(sizes) <= 8, sizes
    assert refreshes(gw, "rotated") == 5


async def test_three_hundred_concurrent_requests_share_one_rotation(gw: Gateway) -> None:
    jar = await logged_in(gw)
    gw.clock.advance(1801)
    url = gw.client.make_url("/bbb")
    # Unlimited connections, so the requests are in the gateway at the same time.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one() -> tuple[int, str, tuple[str, ...]]:
            async with http.get(url, headers=jar.headers(FETCH)) as response:
                cookies = tuple(response.headers.getall("Set-Cookie", ()))
                return response.status, await response.text(), cookies

        answers = await asyncio.gather(*(one() for _ in range(300)))
    assert {(status, text) for status, text, _ in answers} == {(200, "bbb")}
    assert len({cookies for _, _, cookies in answers}) == 1  # everyone got the same new pair
    assert refreshes(gw, "rotated") == 1
    assert refreshes(gw, "grace") == refreshes(gw, "reuse_detected") == 0
    sessions = await gw.app[STORE].list_sessions(1)
    assert [s.revoked_at for s in sessions] == [None]
    jar.apply(answers[0][2])
    assert (await gw.client.get("/bbb", headers=jar.headers(FETCH))).status == 200


async def test_a_request_just_after_the_rotation_shares_it(gw: Gateway) -> None:
    jar = await logged_in(gw)
    old = Jar(dict(jar.values))
    gw.clock.advance(1801)
    first = await gw.client.get("/bbb", headers=old.headers(FETCH))
    late = await gw.client.get("/bbb", headers=old.headers(FETCH))  # queued in the browser
    assert first.status == late.status == 200
    assert set_cookies(first) == set_cookies(late)
    assert refreshes(gw, "rotated") == 1 and refreshes(gw, "grace") == 0


async def test_a_dead_session_clears_its_cookies(gw: Gateway) -> None:
    jar = await logged_in(gw)
    await gw.client.post("/user/logout", headers=jar.headers(unsafe(gw)))  # elsewhere
    for headers, status in ((FETCH, 401), (NAVIGATE, 302)):
        response = await gw.client.get("/bbb", headers=jar.headers(headers), allow_redirects=False)
        assert response.status == status
        cleared = set_cookies(response)
        assert {name: c.attributes["max-age"] for name, c in cleared.items()} == {
            ACCESS: "0",
            REFRESH: "0",
        }
    api = await gw.client.get("/bbb", headers=jar.headers(FETCH))
    assert (await api.json())["message"] == "Session has expired or ended; log in again"


async def test_a_stolen_old_refresh_cookie_after_the_grace_window_is_reuse(gw: Gateway) -> None:
    jar = await logged_in(gw)
    stolen = Jar(dict(jar.values))
    gw.clock.advance(1801)
    jar.update(await gw.client.get("/bbb", headers=jar.headers(FETCH)))
    gw.clock.advance(11)  # past sessions.reuse_grace
    replay = await gw.client.get("/bbb", headers=stolen.without(ACCESS).headers(FETCH))
    assert replay.status == 401
    assert refreshes(gw, "reuse_detected") == 1
    # The family is revoked: the rightful holder must log in again too (RFC 9700).
    assert (await gw.client.get("/bbb", headers=jar.headers(FETCH))).status == 401


# --- CSRF -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_an_unsafe_request_by_cookie_from_another_origin_is_refused(
    gw: Gateway, method: str
) -> None:
    jar = await logged_in(gw)
    for headers in (
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"},  # another port
        {},  # neither Origin nor Sec-Fetch-Site
    ):
        response = await gw.client.request(method, "/private/x", headers=jar.headers(headers))
        assert response.status == 403, headers
        assert (await response.json())["message"].startswith("Cross-origin request refused")
    allowed = await gw.client.request(method, "/private/x", headers=jar.headers(unsafe(gw)))
    assert allowed.status == 200
    by_metadata = await gw.client.request(
        method, "/private/x", headers=jar.headers({"Sec-Fetch-Site": "same-origin"})
    )
    assert by_metadata.status == 200


async def test_a_bearer_client_is_not_subject_to_the_origin_rule(gw: Gateway) -> None:
    pair = await gw.login()
    response = await gw.client.post(
        "/private/x",
        headers={"Authorization": f"Bearer {pair['access_token']}", "Origin": "https://any"},
    )
    assert response.status == 200


async def test_a_refused_unsafe_request_does_not_rotate(gw: Gateway) -> None:
    jar = await logged_in(gw)
    gw.clock.advance(1801)
    response = await gw.client.post("/private/x", headers=jar.headers({"Origin": "https://x.y"}))
    assert response.status == 403
    assert refreshes(gw, "rotated") == 0


async def test_trusted_origins_may_send_unsafe_requests(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(
        routes=ROUTES, browser={"trusted_origins": ["https://admin.example"]}, demo_user=True
    )
    jar = await logged_in(gw)
    response = await gw.client.post(
        "/private/x", headers=jar.headers({"Origin": "https://admin.example"})
    )
    assert response.status == 200


# --- logout by cookie -----------------------------------------------------------------------


async def test_logout_by_fetch_ends_the_session_and_clears_the_cookies(gw: Gateway) -> None:
    jar = await logged_in(gw)
    response = await gw.client.post("/user/logout", headers=jar.headers(unsafe(gw)))
    assert (response.status, await response.json()) == (200, {"message": "Logged out"})
    assert {n: c.attributes["max-age"] for n, c in jar.update(response).items()} == {
        ACCESS: "0",
        REFRESH: "0",
    }
    sessions = await gw.app[STORE].list_sessions(1)
    assert [s.revoked_at is not None for s in sessions] == [True]


async def test_logout_by_form_shows_the_login_page(gw: Gateway) -> None:
    jar = await logged_in(gw)
    headers = jar.headers(NAVIGATE, {"Origin": origin_of(gw.client)})
    response = await gw.client.post("/user/logout", data={}, headers=headers, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/_gateway/login?logged_out=1"
    page = await gw.client.get(response.headers["Location"], headers=NAVIGATE)
    assert "You have been logged out." in await page.text()


async def test_logout_from_another_origin_is_refused_and_the_session_lives(gw: Gateway) -> None:
    jar = await logged_in(gw)
    for headers in (
        {**NAVIGATE, "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        {**NAVIGATE, "Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"},
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
    ):
        response = await gw.client.post(
            "/user/logout", data={"x": "1"}, headers=jar.headers(headers)
        )
        assert response.status == 403, headers
    # Without cookies (a cross-site form under SameSite=Lax), a navigation is refused too.
    blind = await gw.client.post(
        "/user/logout", headers={**NAVIGATE, "Origin": "https://evil.example"}
    )
    assert blind.status == 403
    assert (await gw.client.get("/bbb", headers=jar.headers(FETCH))).status == 200


async def test_a_navigation_to_logout_asks_first(gw: Gateway) -> None:
    jar = await logged_in(gw)
    page = await gw.client.get("/user/logout", headers=jar.headers(NAVIGATE))
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert '<form method="post" action="/user/logout">' in html
    assert (await gw.client.get("/bbb", headers=jar.headers(FETCH))).status == 200
    api = await gw.client.get("/user/logout")  # the JSON API's answer, as before
    assert api.status == 405 and api.headers["Allow"] == "POST"


async def test_the_json_logout_is_unchanged(gw: Gateway) -> None:
    empty = await gw.client.post("/user/logout")
    assert empty.status == 400  # no cookie, no body, no token: nothing to end
    pair = await gw.login()
    by_body = await gw.client.post("/user/logout", json={"refresh_token": pair["refresh_token"]})
    assert by_body.status == 200 and "Set-Cookie" not in by_body.headers


# --- switched off ---------------------------------------------------------------------------


async def test_with_cookie_sessions_off_there_is_no_login_page(
    start_gateway: GatewayFactory,
) -> None:
    gw: Gateway = await start_gateway(routes=ROUTES, browser={"cookie_sessions": False})
    navigation = await gw.client.get("/bbb", headers=NAVIGATE, allow_redirects=False)
    assert navigation.status == 401
    page = await gw.client.get("/_gateway/login")
    assert page.status == 404
    assert (await page.json())["message"].startswith("There is no login page")
    # Cookies of an earlier run with cookie sessions still never reach an upstream.
    echoed = await gw.client.get("/echo/x", headers={"Cookie": f"{REFRESH}=x; a=1"})
    assert echoed_header(await echoed.json(), "Cookie") == ["a=1"]
