"""The decision endpoints in process, against real databases: each ingress's request shape as
its documentation says it is sent, the route policy applied to the original request (deny by
default, the proxy's path rules, roles, revocation), cookie sessions' login redirect and refresh,
the trusted-proxy rule, and the optional decision cache."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import parse_config
from gateway.appkeys import STORE
from gateway.errors import ConfigError
from gateway.forward_auth.decision import NGINX_COOKIE_HEADER
from gateway.forward_auth.shapes import EXT_AUTHZ_PREFIX
from tests.config.test_config import minimal
from tests.support.cookies import FETCH, NAVIGATE, Jar, log_in_by_form, set_cookies
from tests.support.errors import error_body
from tests.support.gateways import Gateway, GatewayFactory, route
from tests.support.wire import raw_http

ACCESS, REFRESH = "__Host-gateway-access", "__Host-gateway-refresh"
ROUTES = [
    route("/aaa", "public", methods=["GET"]),
    route("/bbb", methods=["GET"]),
    route("/whoami"),
    route("/maybe/**", "optional"),
    route("/admin/**", roles=["admin"]),
]
TRUSTED = {"server": {"trusted_proxies": ["127.0.0.1"]}}
OWN = "The gateway answers {} only when it is spelled exactly so"
AMBIGUOUS = (
    "Ambiguous forward-auth request: both {} and {} were sent; "
    "the ingress must clear the other shape's headers"
)
IDENTITY = ("X-User-Id", "X-User-Name", "X-User-Roles")


def nginx(uri: str, method: str = "GET", **headers: str) -> dict[str, str]:
    """What deploy/forward-auth/nginx.conf sends for a request."""
    return {
        "X-Original-URI": uri,
        "X-Original-Method": method,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "app.example",
        **headers,
    }


def traefik(uri: str, method: str = "GET", **headers: str) -> dict[str, str]:
    """Traefik's forwardAuth (and Caddy's forward_auth): X-Forwarded-Method, -Proto, -Host,
    -Uri and -For, with the client's own headers."""
    return {
        "X-Forwarded-Method": method,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "app.example",
        "X-Forwarded-Uri": uri,
        "X-Forwarded-For": "203.0.113.7",
        **headers,
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def gw(start_gateway: GatewayFactory) -> Gateway:
    gateway: Gateway = await start_gateway(routes=ROUTES, **TRUSTED, demo_user=True)
    return gateway


async def decide(gw: Gateway, headers: dict[str, str]) -> Any:
    return await gw.client.get("/_gateway/auth", headers=headers, allow_redirects=False)


@pytest.mark.parametrize("shape", [nginx, traefik])
async def test_a_valid_token_is_permitted_with_the_identity_headers(
    gw: Gateway, shape: Any
) -> None:
    token = (await gw.login())["access_token"]
    response = await decide(gw, shape("/bbb?x=1", **bearer(token)))
    assert response.status == 200
    assert response.headers["X-User-Id"] == "1"
    assert response.headers["X-User-Name"] == "guang"
    assert response.headers["X-User-Roles"] == ""
    assert await response.read() == b""
    assert "Cache-Control" not in response.headers  # the decision cache is off by default


@pytest.mark.parametrize("shape", [nginx, traefik])
async def test_no_token_or_a_bad_one_is_401_with_a_challenge(gw: Gateway, shape: Any) -> None:
    missing = await decide(gw, shape("/bbb"))
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="gateway"'
    body = await missing.json()
    assert body == error_body(401, "Unauthorized", "Missing bearer token")
    bad = await decide(gw, shape("/bbb", **bearer("not.a.token")))
    assert bad.status == 401
    assert 'error="invalid_token"' in bad.headers["WWW-Authenticate"]
    assert not any(name in bad.headers for name in IDENTITY)


async def test_a_public_route_is_permitted_without_identity_headers(gw: Gateway) -> None:
    token = (await gw.login())["access_token"]
    for headers in (nginx("/aaa"), nginx("/aaa", **bearer(token))):
        response = await decide(gw, headers)
        assert response.status == 200
        assert not any(name in response.headers for name in IDENTITY)


async def test_optional_routes_pass_anonymous_and_identify_a_token(gw: Gateway) -> None:
    token = (await gw.login())["access_token"]
    anonymous = await decide(gw, nginx("/maybe/x"))
    assert anonymous.status == 200 and "X-User-Id" not in anonymous.headers
    known = await decide(gw, nginx("/maybe/x", **bearer(token)))
    assert known.headers["X-User-Name"] == "guang"


@pytest.mark.parametrize(
    ("uri", "method", "message"),
    [
        ("/nowhere", "GET", "No route for /nowhere"),
        ("/bbb/", "GET", "No route for /bbb/"),
        ("/bbb", "POST", "Method POST is not allowed for /bbb"),
        # Spellings the proxy refuses (400) or keeps apart from the gateway's own paths (404).
        ("/aaa/..%2fbbb", "GET", "Request path must not contain an encoded '/', '\\' or NUL"),
        ("/aaa;/../bbb", "GET", "Request path must not contain ';' parameters"),
        ("/aaa/%2e%2e/%2e%2e/bbb", "GET", "Request path climbs above the root with '..'"),
        ("//user/login", "GET", OWN.format("/user/login")),
        ("/_gateway/auth", "GET", OWN.format("/_gateway/auth")),
    ],
)  # fmt: skip
async def test_what_the_proxy_would_refuse_is_403(
    gw: Gateway, uri: str, method: str, message: str
) -> None:
    token = (await gw.login())["access_token"]
    response = await decide(gw, nginx(uri, method, **bearer(token)))
    assert response.status == 403
    assert (await response.json())["message"] == message
    assert "X-User-Id" not in response.headers


async def test_an_original_uri_that_is_not_utf8_is_403_not_500(gw: Gateway) -> None:
    # nginx passes the request line's bytes through in X-Original-URI as they came.
    server = gw.client.server
    nav = "".join(f"{name}: {value}\r\n" for name, value in NAVIGATE.items())
    for uri in ("/aaa\xff", "/aaa/\xed\xa0\x80", "/bbb?next=\xff"):
        status, body = await raw_http(
            str(server.host),
            int(server.port or 0),
            "/_gateway/auth",
            # A navigation: its query would go into the login page's redirect.
            headers=f"X-Original-URI: {uri}\r\nX-Original-Method: GET\r\n{nav}",
        )
        assert status == 403, body
        assert b"not valid UTF-8" in body


async def test_a_dot_segment_is_decided_on_the_path_it_resolves_to(gw: Gateway) -> None:
    # /aaa/../bbb is /bbb when proxied, so it needs /bbb's token here too.
    response = await decide(gw, traefik("/aaa/../bbb"))
    assert response.status == 401


async def test_roles_are_403(gw: Gateway) -> None:
    token = (await gw.login())["access_token"]
    response = await decide(gw, nginx("/admin/panel", **bearer(token)))
    assert response.status == 403
    assert (await response.json())["message"] == "Requires one of the roles: admin"
    user = await gw.app[STORE].get_user_by_name("guang")
    assert user is not None
    await gw.app[STORE].set_roles(user.id, ("admin",))
    admin = (await gw.login())["access_token"]
    allowed = await decide(gw, nginx("/admin/panel", **bearer(admin)))
    assert allowed.status == 200 and allowed.headers["X-User-Roles"] == "admin"


async def test_a_revoked_session_is_refused(gw: Gateway) -> None:
    pair = await gw.login()
    assert (await decide(gw, nginx("/bbb", **bearer(pair["access_token"])))).status == 200
    logout = await gw.client.post("/user/logout", headers=bearer(pair["access_token"]))
    assert logout.status == 200
    response = await decide(gw, nginx("/bbb", **bearer(pair["access_token"])))
    assert response.status == 401
    assert (await response.json())["message"] == "Session has been revoked; log in again"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X-Original-URI": "/aaa"}, "Send exactly one X-Original-Method header (got 0)"),
        ({"X-Forwarded-Uri": "/aaa"}, "Send exactly one X-Forwarded-Method header (got 0)"),
        ({"X-Original-URI": "aaa", "X-Original-Method": "GET"},
         "X-Original-URI must be the request's path and query, starting with '/'"),
        ({"X-Original-URI": "/aaa", "X-Original-Method": "G ET"},
         "X-Original-Method must be an HTTP method"),
        # A client behind Traefik adds nginx's header: neither is guessed.
        ({**traefik("/bbb"), "X-Original-URI": "/aaa"},
         AMBIGUOUS.format("X-Original-URI", "X-Forwarded-Uri")),
        ({**nginx("/bbb"), "X-Forwarded-Method": "GET"},
         AMBIGUOUS.format("X-Original-URI", "X-Forwarded-Method")),
        ({}, ("Not a forward-auth request: send X-Original-URI and X-Original-Method (nginx) "
              "or X-Forwarded-Uri and X-Forwarded-Method (Traefik, Caddy)")),
    ],
)  # fmt: skip
async def test_a_request_of_no_one_shape_is_403(
    gw: Gateway, headers: dict[str, str], message: str
) -> None:
    response = await decide(gw, headers)
    assert response.status == 403
    assert (await response.json())["message"] == message


async def test_a_repeated_original_header_is_403(gw: Gateway) -> None:
    response = await gw.client.get(
        "/_gateway/auth",
        headers=[
            ("X-Original-URI", "/bbb"),
            ("X-Original-URI", "/aaa"),
            ("X-Original-Method", "GET"),
        ],
    )
    assert response.status == 403
    assert (await response.json())["message"] == "Send exactly one X-Original-URI header (got 2)"


async def test_a_peer_that_is_not_a_trusted_proxy_is_403(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(
        routes=ROUTES, server={"trusted_proxies": ["10.0.0.0/8"]}, demo_user=True
    )
    token = (await gw.login())["access_token"]
    for path, headers in (
        ("/_gateway/auth", nginx("/bbb", **bearer(token))),
        ("/_gateway/auth", nginx("/aaa")),
        (f"{EXT_AUTHZ_PREFIX}/bbb", bearer(token)),
    ):
        response = await gw.client.get(path, headers=headers)
        assert response.status == 403
        assert "trusted_proxies" in (await response.json())["message"]
        assert "X-User-Id" not in response.headers


# --- Envoy ext_authz: the original method and path (after the prefix), allowed headers --------


async def test_envoy_checks_the_path_after_the_prefix_with_the_original_method(
    gw: Gateway,
) -> None:
    token = (await gw.login())["access_token"]
    check = await gw.client.get(
        f"{EXT_AUTHZ_PREFIX}/bbb?x=1",
        headers={**bearer(token), "X-Forwarded-Proto": "https", "Host": "app.example"},
    )
    assert check.status == 200
    assert check.headers["X-User-Name"] == "guang"
    # Envoy sends the original method (with Content-Length: 0; the body is never read).
    post = await gw.client.post(f"{EXT_AUTHZ_PREFIX}/bbb", headers=bearer(token), data=b"")
    assert post.status == 403
    assert (await post.json())["message"] == "Method POST is not allowed for /bbb"
    assert (await gw.client.get(f"{EXT_AUTHZ_PREFIX}/bbb")).status == 401
    assert (await gw.client.get(f"{EXT_AUTHZ_PREFIX}/nowhere")).status == 403
    assert (await gw.client.get(f"{EXT_AUTHZ_PREFIX}/aaa/..%2fbbb")).status == 403


async def test_envoy_gets_empty_identity_headers_for_an_anonymous_request(gw: Gateway) -> None:
    # allowed_upstream_headers overwrite the client's copies only when the answer has them.
    response = await gw.client.get(f"{EXT_AUTHZ_PREFIX}/aaa", headers={"X-User-Id": "1"})
    assert response.status == 200
    assert [response.headers.getall(name) for name in IDENTITY] == [[""], [""], [""]]


# --- cookie sessions ----------------------------------------------------------------------


async def logged_in(gw: Gateway) -> Jar:
    jar = Jar()
    response = await log_in_by_form(gw.client, jar)
    assert response.status == 303, await response.text()
    return jar


async def test_a_navigation_without_a_session_is_sent_to_the_login_page(gw: Gateway) -> None:
    through_traefik = await decide(gw, traefik("/bbb?x=1", **NAVIGATE))
    assert through_traefik.status == 302
    assert through_traefik.headers["Location"] == "/_gateway/login?rd=/bbb?x%3D1"
    # nginx's auth_request takes only 401 and 403: the Location rides on the 401.
    through_nginx = await decide(gw, nginx("/bbb?x=1", **NAVIGATE))
    assert through_nginx.status == 401
    assert through_nginx.headers["Location"] == "/_gateway/login?rd=%2Fbbb%3Fx%3D1"
    # A fetch() is no navigation: the JSON 401 for it.
    fetch = await decide(gw, traefik("/bbb", **FETCH))
    assert fetch.status == 401 and "Location" not in fetch.headers


async def test_session_cookies_are_an_identity(gw: Gateway) -> None:
    jar = await logged_in(gw)
    response = await decide(gw, nginx("/whoami", **jar.headers(NAVIGATE)))
    assert response.status == 200
    assert response.headers["X-User-Name"] == "guang"
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize("shape", [nginx, traefik])
async def test_an_expired_access_cookie_is_refreshed_and_the_cookies_handed_back(
    gw: Gateway, shape: Any
) -> None:
    jar = await logged_in(gw)
    old_refresh = jar.values[REFRESH]
    gw.clock.advance(31 * 60)  # past access_ttl (and its leeway)
    response = await decide(gw, shape("/whoami", **jar.headers(FETCH)))
    assert response.status == 200
    assert response.headers["X-User-Name"] == "guang"
    received = set_cookies(response)
    assert set(received) == {ACCESS, REFRESH}
    assert received[REFRESH].value != old_refresh
    assert response.headers["Cache-Control"] == "no-store"
    numbered = [response.headers.get(NGINX_COOKIE_HEADER.format(n)) for n in (1, 2, 3)]
    if shape is nginx:  # one header each: $upstream_http_set_cookie would hold only the first
        assert numbered[:2] == response.headers.getall("Set-Cookie") and numbered[2] is None
    else:
        assert numbered == [None, None, None]
    # The new cookies work on the next decision, without another refresh.
    jar.apply(response.headers.getall("Set-Cookie"))
    again = await decide(gw, shape("/whoami", **jar.headers(FETCH)))
    assert again.status == 200 and "Set-Cookie" not in again.headers


async def test_an_unsafe_request_by_cookie_from_another_origin_is_403(gw: Gateway) -> None:
    jar = await logged_in(gw)
    foreign = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    response = await decide(gw, traefik("/maybe/x", "POST", **jar.headers(foreign)))
    assert response.status == 403
    own = {"Origin": "https://app.example", "Sec-Fetch-Site": "same-origin"}
    allowed = await decide(gw, traefik("/maybe/x", "POST", **jar.headers(own)))
    assert allowed.status == 200 and allowed.headers["X-User-Name"] == "guang"


# --- the decision cache -------------------------------------------------------------------


async def test_the_decision_cache_is_offered_within_the_tokens_life(
    start_gateway: GatewayFactory,
) -> None:
    gw: Gateway = await start_gateway(
        routes=ROUTES, forward_auth={"cache_max_age": 2}, **TRUSTED, demo_user=True
    )
    gw.clock.now = float(int(gw.clock.now))  # tokens carry whole seconds
    pair = await gw.login()
    response = await decide(gw, nginx("/bbb", **bearer(pair["access_token"])))
    assert response.headers["Cache-Control"] == "private, max-age=2"
    assert response.headers["X-Accel-Expires"] == "2"  # what nginx's proxy_cache goes by
    through_traefik = await decide(gw, traefik("/bbb", **bearer(pair["access_token"])))
    assert through_traefik.headers["Cache-Control"] == "private, max-age=2"
    assert "X-Accel-Expires" not in through_traefik.headers
    public = await decide(gw, nginx("/aaa"))
    assert public.status == 200
    assert public.headers["Cache-Control"] == "private, max-age=2"
    # A decision by cookie also depends on Origin and Sec-Fetch-*: never offered for caching.
    jar = await logged_in(gw)
    by_cookie = await decide(gw, nginx("/bbb", **jar.headers(NAVIGATE)))
    assert by_cookie.status == 200 and "Cache-Control" not in by_cookie.headers
    gw.clock.advance(pair["expires_in"] - 1.5)  # one and a half seconds of the token left
    late = await decide(gw, nginx("/bbb", **bearer(pair["access_token"])))
    assert late.headers["Cache-Control"] == "private, max-age=1"
    refused = await decide(gw, nginx("/bbb"))
    assert refused.status == 401 and "max-age" not in refused.headers.get("Cache-Control", "")


def test_the_decision_cache_may_not_outlast_the_revocation_bound() -> None:
    raw = minimal(forward_auth={"cache_max_age": "3s"}, sessions={"revocation_poll": "2s"})
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ={})
    assert caught.value.problems == [
        (
            "<memory>: forward_auth.cache_max_age: must not be longer than sessions."
            "revocation_poll (2s): an ingress would let a revoked session through for longer"
        )
    ]
    assert parse_config(minimal(forward_auth={"cache_max_age": "2s"}), environ={})


# --- route rate limits ------------------------------------------------------------------------


async def test_a_routes_rate_limit_holds_for_decisions_too(start_gateway: GatewayFactory) -> None:
    # What the proxy would limit the decision limits: with an ingress proxying, the decision
    # is the gateway's only look at the request. nginx's auth_request turns a 429 into its own
    # 500, so nginx gets 403; Traefik, Caddy and Envoy pass the 429 on. Never offered for
    # caching: a cached permit would not be counted.
    limited = route("/limited", "public", rate_limit={"requests": 3, "per": "1h", "by": "address"})
    gw: Gateway = await start_gateway(
        routes=[*ROUTES, limited], forward_auth={"cache_max_age": 2}, **TRUSTED
    )
    first = nginx("/limited", **{"X-Forwarded-For": "203.0.113.7"})
    permits = [await decide(gw, first) for _ in range(3)]
    assert [r.status for r in permits] == [200, 200, 200]
    assert not any("Cache-Control" in r.headers for r in permits)
    refused = await decide(gw, first)
    assert refused.status == 403
    body = await refused.json()
    assert body["error"] == "Forbidden" and body["message"].startswith("Too many requests")
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.headers["RateLimit-Limit"] == "3"
    other = traefik("/limited", **{"X-Forwarded-For": "203.0.113.8"})
    assert [(await decide(gw, other)).status for _ in range(4)] == [200, 200, 200, 429]
    envoy = await gw.client.get(
        f"{EXT_AUTHZ_PREFIX}/limited", headers={"X-Forwarded-For": "203.0.113.7"}
    )
    assert envoy.status == 429
