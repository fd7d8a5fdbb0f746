"""Forward auth for real: Debian's nginx (`auth_request`) and Caddy (`forward_auth`) with the
shipped configs from deploy/forward-auth/, in front of the real demo upstream, asking a real
gateway on free ports. What reaches the upstream is recorded, to show that a refused request
never does."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from gateway.appkeys import METRICS, STORE
from tests.support import ingresses
from tests.support.cookies import FETCH, NAVIGATE, Jar
from tests.support.gateways import route

ROUTES: list[dict[str, Any]] = [
    route("/aaa", "public", methods=["GET"]),
    route("/bbb", methods=["GET"]),
    route("/whoami"),
    route("/echo/**"),
]
REVOCATION_POLL = 0.5
INGRESSES: dict[str, Callable[..., AbstractContextManager[str]]] = {
    "nginx": ingresses.nginx,
    "caddy": ingresses.caddy,
}


class Stack:
    """The ingress's URL, the gateway app, and the paths that reached the upstream."""

    def __init__(self, url: str, gateway: web.Application, seen: list[str]) -> None:
        self.url = url
        self.gateway = gateway
        self.seen = seen

    async def token(self, http: aiohttp.ClientSession) -> str:
        """Log in through the ingress, as a client would."""
        async with http.post(
            f"{self.url}/user/login", json={"username": "guang", "password": "123456"}
        ) as response:
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
        return str(body["access_token"])

    async def revoke_and_wait_for_refusal(
        self, http: aiohttp.ClientSession, token: str, *, within: float
    ) -> None:
        """End guang's sessions straight in the database, as another replica's logout would
        (this process learns it only from its poll); /bbb must refuse `token` `within` seconds."""
        store = self.gateway[STORE]
        user = await store.get_user_by_name("guang")
        assert user is not None
        await store.revoke_user_sessions(user.id, reason="test", now=time.time())
        revoked_at = time.monotonic()
        while (await fetch(http, f"{self.url}/bbb", bearer(token)))[0] == 200:
            assert time.monotonic() - revoked_at < within, "still let through"
            await asyncio.sleep(0.05)
        assert (await fetch(http, f"{self.url}/bbb", bearer(token)))[0] == 401


@asynccontextmanager
async def ingress_stack(
    ingress: str, tmp_path: Path, aiohttp_server: Callable[..., Any], **gateway_config: Any
) -> AsyncIterator[Stack]:
    """`ingress` in front of the demo upstream, asking a gateway configured with
    `gateway_config` (beyond ROUTES) for its decisions."""
    behind = await ingresses.gateway_and_upstream(
        aiohttp_server, f"sqlite:///{tmp_path / 'gateway.db'}", ROUTES, **gateway_config
    )
    start = INGRESSES[ingress]
    with start(tmp_path / ingress, gateway=behind.gateway_address, app=behind.app_address) as url:
        yield Stack(url, behind.gateway, behind.seen)


@pytest.fixture(params=sorted(INGRESSES))
async def stack(
    request: pytest.FixtureRequest, tmp_path: Path, aiohttp_server: Callable[..., Any]
) -> AsyncIterator[Stack]:
    sessions = {"revocation_poll": REVOCATION_POLL}
    async with ingress_stack(request.param, tmp_path, aiohttp_server, sessions=sessions) as stack:
        yield stack


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def fetch(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, str, Any]:
    async with http.get(url, headers=headers, allow_redirects=False) as response:
        return response.status, await response.text(), response.headers


async def test_no_token_is_401_and_nothing_reaches_the_upstream(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    status, body, headers = await fetch(http, f"{stack.url}/bbb")
    assert status == 401, body
    assert headers["WWW-Authenticate"].startswith('Bearer realm="gateway"')
    status, _, _ = await fetch(http, f"{stack.url}/bbb", bearer("not.a.token"))
    assert status == 401
    assert stack.seen == []


async def test_a_valid_token_reaches_the_upstream(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    token = await stack.token(http)
    status, body, _ = await fetch(http, f"{stack.url}/bbb", bearer(token))
    assert (status, body) == (200, "bbb")
    assert stack.seen == ["/bbb"]


async def test_whoami_is_the_gateways_identity_whatever_the_client_sent(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    token = await stack.token(http)
    forged = {
        **bearer(token),
        "X-User-Id": "666",
        "x-user-name": "root",
        "X-User-Roles": "admin",
        "X_User_Id": "666",
    }
    async with http.get(f"{stack.url}/whoami", headers=forged) as response:
        assert response.status == 200
        body = await response.json()
    assert body["user_id"] == "1" and body["username"] == "guang"
    identity = body["identity_headers"]
    # No roles: nginx sends no header for the empty value, Caddy an empty one (as the proxy).
    assert identity.pop("x-user-roles", [""]) == [""]
    assert identity == {"x-user-id": ["1"], "x-user-name": ["guang"]}


async def test_the_gateways_cookies_never_reach_the_upstream(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    token = await stack.token(http)
    sent = "__Host-gateway-access=a; theme=dark; __Host-gateway-refresh=r; lang=en; gateway-csrf=c"
    async with http.get(
        f"{stack.url}/echo/x", headers={**bearer(token), "Cookie": sent}
    ) as response:
        assert response.status == 200
        echo = await response.json()
    cookies = [value for name, value in echo["headers"] if name.lower() == "cookie"]
    assert cookies == ["theme=dark; lang=en"]


async def test_a_public_route_passes_without_a_token_and_without_forged_identity(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await fetch(http, f"{stack.url}/aaa")
    assert (status, body) == (200, "aaa")
    async with http.get(f"{stack.url}/echo/x", headers={"X-User-Id": "666"}) as refused:
        assert refused.status == 401  # /echo is protected: the forged header is no identity
    assert stack.seen == ["/aaa"]


async def test_a_path_no_route_names_is_refused(stack: Stack, http: aiohttp.ClientSession) -> None:
    token = await stack.token(http)
    for path in ("/nowhere", "/bbb/", "/_gateway/auth", "/_gateway/ext-authz/bbb"):
        status, _, _ = await fetch(http, f"{stack.url}{path}", bearer(token))
        assert status in (403, 404), path
    assert stack.seen == []


@pytest.mark.parametrize("path", ["/aaa/..%2fbbb", "/aaa/%2e%2e%2fbbb", "/aaa;/../bbb"])
async def test_a_path_bypass_spelling_is_refused(
    stack: Stack, http: aiohttp.ClientSession, path: str
) -> None:
    # yarl would tidy the path: send it as written.
    async with http.get(URL(f"{stack.url}{path}", encoded=True)) as response:
        assert response.status in (400, 403), path  # nginx or Caddy may refuse it first
    assert stack.seen == []


async def test_a_dot_segment_spelling_needs_the_token_of_the_path_it_resolves_to(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    url = URL(f"{stack.url}/aaa/%2e%2e/bbb", encoded=True)
    async with http.get(url) as response:
        assert response.status in (400, 401), await response.text()
    assert stack.seen == []


async def test_a_revoked_session_is_refused_within_the_revocation_bound(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    token = await stack.token(http)
    assert (await fetch(http, f"{stack.url}/bbb", bearer(token)))[0] == 200
    await stack.revoke_and_wait_for_refusal(http, token, within=REVOCATION_POLL + 1.0)


# --- cookie sessions through the ingress ----------------------------------------------------


@pytest.fixture(params=sorted(INGRESSES))
async def short_lived(
    request: pytest.FixtureRequest, tmp_path: Path, aiohttp_server: Callable[..., Any]
) -> AsyncIterator[Stack]:
    """The stack with one-second access tokens, for refreshes."""
    tokens = {"access_ttl": "1s", "leeway": "0s"}
    async with ingress_stack(request.param, tmp_path, aiohttp_server, tokens=tokens) as stack:
        yield stack


async def log_in_through(http: aiohttp.ClientSession, url: str, jar: Jar) -> None:
    """The login page and its form, through the ingress, as a browser does."""
    async with http.get(
        f"{url}/_gateway/login", params={"rd": "/whoami"}, headers=jar.headers(NAVIGATE)
    ) as page:
        assert page.status == 200, await page.text()
        jar.update(page)
        csrf = re.search(r'name="csrf" value="([^"]+)"', await page.text())
    assert csrf is not None
    form = {"username": "guang", "password": "123456", "csrf": csrf.group(1), "rd": "/whoami"}
    own = {"Origin": url, "Sec-Fetch-Site": "same-origin"}
    async with http.post(
        f"{url}/_gateway/login",
        data=form,
        headers=jar.headers(NAVIGATE, own),
        allow_redirects=False,
    ) as submitted:
        assert submitted.status == 303, await submitted.text()
        jar.update(submitted)


async def test_a_session_refreshed_in_the_decision_hands_its_cookies_to_the_browser(
    short_lived: Stack, http: aiohttp.ClientSession
) -> None:
    jar = Jar()
    await log_in_through(http, short_lived.url, jar)
    first_refresh = jar.values["__Host-gateway-refresh"]
    await asyncio.sleep(1.2)  # the access token is over: the next decision refreshes
    async with http.get(f"{short_lived.url}/whoami", headers=jar.headers(FETCH)) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["username"] == "guang"
        received = jar.update(response)
    assert set(received) == {"__Host-gateway-access", "__Host-gateway-refresh"}
    assert jar.values["__Host-gateway-refresh"] != first_refresh
    # The new cookies work; the app saw none of them.
    async with http.get(f"{short_lived.url}/echo/x", headers=jar.headers(FETCH)) as echo:
        assert echo.status == 200 and "Set-Cookie" not in echo.headers
        seen = await echo.json()
    assert [v for n, v in seen["headers"] if n.lower() == "cookie"] == []


# --- nginx's decision cache -----------------------------------------------------------------


async def test_nginx_caches_decisions_no_longer_than_the_gateway_says(
    tmp_path: Path, aiohttp_server: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    # Two seconds: the five requests below fit in one cached decision on a loaded machine.
    poll, max_age = 2.0, 2
    behind = await ingresses.gateway_and_upstream(
        aiohttp_server,
        f"sqlite:///{tmp_path / 'gateway.db'}",
        ROUTES,
        sessions={"revocation_poll": poll},
        forward_auth={"cache_max_age": max_age},
    )
    decisions = behind.gateway[METRICS].requests.labels("forward_auth", "GET", "200")
    with ingresses.nginx(
        tmp_path / "nginx",
        gateway=behind.gateway_address,
        app=behind.app_address,
        decision_cache=True,
    ) as url:
        stack = Stack(url, behind.gateway, behind.seen)
        token = await stack.token(http)
        for _ in range(5):
            status, body, _ = await fetch(http, f"{url}/bbb", bearer(token))
            assert (status, body) == (200, "bbb")
        assert decisions.value == 1  # four answered from nginx's cache
        assert len(behind.seen) == 5  # every one of them proxied by nginx
        # Another token, method or path is another key; a refusal is never cached.
        assert (await fetch(http, f"{url}/bbb", bearer(token + "x")))[0] == 401
        assert (await fetch(http, f"{url}/whoami", bearer(token)))[0] == 200
        assert decisions.value == 2
        await stack.revoke_and_wait_for_refusal(http, token, within=poll + max_age + 1.0)


async def test_no_spelling_of_an_identity_header_reaches_the_upstream(
    stack: Stack, http: aiohttp.ClientSession
) -> None:
    # CGI/WSGI-style backends fold '_' to '-' and ignore case: every one of these becomes
    # HTTP_X_USER_ID there. Go (Caddy, Traefik) keeps X-User_Id, X_User-Id and X_User_Id apart.
    token = await stack.token(http)
    spellings = ["X_User_Id", "X-User_Id", "X_User-Id", "x_uSer_iD", "X_User_Name", "X-User_Roles"]
    forged = {**bearer(token), **{name: "666" for name in spellings}}
    async with http.get(f"{stack.url}/echo/x", headers=forged) as response:
        assert response.status == 200
        echo = await response.json()
    identity = [
        (name, value)
        for name, value in echo["headers"]
        if name.lower().replace("_", "-").startswith("x-user-")
    ]
    # No roles: nginx sends no header for the empty value, Caddy an empty one.
    assert sorted(set(identity) - {("X-User-Roles", "")}) == [
        ("X-User-Id", "1"),
        ("X-User-Name", "guang"),
    ]
