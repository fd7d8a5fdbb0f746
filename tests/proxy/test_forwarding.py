"""What reaches the upstream, and what comes back: headers, bodies, paths, errors."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.errors import error_body
from tests.support.gateways import (
    TEST_SECRET,
    Gateway,
    GatewayFactory,
    access_claims,
    random_secret,
    route,
)
from tests.support.upstreams import RecordingUpstream
from tests.support.wire import raw_http

Headers = list[list[str]]


def header_values(echoed: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echoed["headers"] if k.lower() == name.lower()]


async def echo(gw: Gateway, path: str, headers: Any = None) -> dict[str, Any]:
    """What the demo upstream received for a GET of `path` through the gateway (its echo)."""
    body: dict[str, Any] = await (await gw.client.get(path, headers=headers)).json()
    return body


async def bearer(gateway: Gateway) -> dict[str, str]:
    pair = await gateway.login()
    return {"Authorization": f"Bearer {pair['access_token']}"}


@pytest.fixture
async def recording(aiohttp_server: Callable[..., Any]) -> tuple[RecordingUpstream, TestServer]:
    upstream = RecordingUpstream()
    server: TestServer = await aiohttp_server(upstream.app)
    return upstream, server


@pytest.fixture
async def guarded(
    start_gateway: GatewayFactory, recording: tuple[RecordingUpstream, TestServer]
) -> tuple[Gateway, RecordingUpstream]:
    """A gateway in front of a recording upstream, to prove what never reaches it."""
    upstream, server = recording
    gw: Gateway = await start_gateway(
        upstream_url=str(server.make_url("/")),
        routes=[route("/open/**", "public"), route("/bbb", methods=["GET"]), route("/private/**")],
        demo_user=True,
    )
    return gw, upstream


FORGED_SPELLINGS = [
    ("X-User-Id", "666"),
    ("x-user-id", "666"),
    ("X-USER-ID", "666"),
    ("X_User_Id", "666"),
    ("x_user_name", "mallory"),
    ("X-User-Name", "mallory"),
]


async def test_forged_identity_headers_never_reach_a_public_route(gateway: Gateway) -> None:
    resp = await gateway.client.get("/echo/x", headers=FORGED_SPELLINGS)
    echoed = await resp.json()
    names = {k.lower().replace("_", "-") for k, _ in echoed["headers"]}
    assert "x-user-id" not in names and "x-user-name" not in names


async def test_protected_route_sees_exactly_the_gateways_identity(gateway: Gateway) -> None:
    headers = [*FORGED_SPELLINGS, *(await bearer(gateway)).items()]
    resp = await gateway.client.get("/whoami", headers=headers)
    body = await resp.json()
    assert body["identity_headers"] == {
        "x-user-id": ["1"],
        "x-user-name": ["guang"],
        "x-user-roles": [""],
    }


async def test_configured_identity_header_names_are_used_and_stripped(
    start_gateway: GatewayFactory,
) -> None:
    gw: Gateway = await start_gateway(
        identity_headers={"user_id": "X-Auth-Sub", "username": "X-Auth-Login"},
        routes=[route("/echo/open/**", "public"), route("/echo/closed/**")],
        demo_user=True,
    )
    forged = [("x-auth-sub", "666"), ("X_AUTH_LOGIN", "mallory"), ("X-Auth-Sub", "7")]
    public = await echo(gw, "/echo/open/x", forged)
    assert not any(k.lower().replace("_", "-").startswith("x-auth-") for k, _ in public["headers"])
    auth = await bearer(gw)
    closed = await echo(gw, "/echo/closed/x", [*forged, *auth.items()])
    assert header_values(closed, "X-Auth-Sub") == ["1"]
    assert header_values(closed, "X-Auth-Login") == ["guang"]
    assert header_values(closed, "X_AUTH_LOGIN") == []


async def test_authorization_is_not_forwarded_unless_the_route_asks(
    start_gateway: GatewayFactory,
) -> None:
    gw: Gateway = await start_gateway(
        routes=[route("/echo/plain/**"), route("/echo/keep/**", forward_authorization=True)],
        demo_user=True,
    )
    auth = await bearer(gw)
    plain = await echo(gw, "/echo/plain/x", auth)
    kept = await echo(gw, "/echo/keep/x", auth)
    assert header_values(plain, "Authorization") == []
    assert header_values(kept, "Authorization") == [auth["Authorization"]]
    assert header_values(plain, "X-User-Id") == ["1"]


async def test_method_query_and_body_arrive_unchanged(gateway: Gateway) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)
    resp = await gateway.client.put(
        "/echo/upload?b=2&a=1&a=%20x",
        data=io.BytesIO(body),
        headers={"Content-Type": "application/x-thing", "Content-Length": str(len(body))},
    )
    echoed = await resp.json()
    assert echoed["method"] == "PUT"
    assert echoed["path"] == "/echo/upload"
    assert echoed["query"] == "b=2&a=1&a=%20x"
    assert echoed["body_length"] == len(body)
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert header_values(echoed, "Content-Type") == ["application/x-thing"]
    assert header_values(echoed, "Content-Length") == [str(len(body))]


async def test_chunked_request_body_streams_through(gateway: Gateway) -> None:
    chunks = [os.urandom(100_000) for _ in range(20)]

    async def produce() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    resp = await gateway.client.post("/echo/stream", data=produce())
    echoed = await resp.json()
    assert echoed["body_length"] == sum(map(len, chunks))
    assert echoed["body_sha256"] == hashlib.sha256(b"".join(chunks)).hexdigest()


async def test_hop_by_hop_and_proxy_headers_are_dropped(gateway: Gateway) -> None:
    resp = await gateway.client.get(
        "/echo/x",
        headers={
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "1",
            "Keep-Alive": "timeout=5",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "Proxy-Foo": "1",
            "TE": "trailers",
            "Upgrade": "h2c",
            "Forwarded": "for=6.6.6.6",
            "X-Real-IP": "6.6.6.6",
            "X-Kept": "yes",
        },
    )
    echoed = await resp.json()
    names = {k.lower() for k, _ in echoed["headers"]}
    for dropped in (
        "x-secret-hop",
        "keep-alive",
        "proxy-authorization",
        "proxy-foo",
        "te",
        "upgrade",
        "forwarded",
        "x-real-ip",
    ):
        assert dropped not in names
    assert header_values(echoed, "X-Kept") == ["yes"]


def folded_names(echoed: dict[str, Any]) -> list[str]:
    """The names that reached the upstream as a CGI/WSGI backend folds them."""
    return [k.lower().replace("_", "-") for k, _ in echoed["headers"]]


async def test_framing_and_routing_headers_are_dropped_in_every_spelling(gateway: Gateway) -> None:
    # WSGI servers fold X_Forwarded_For into the same HTTP_X_FORWARDED_FOR as X-Forwarded-For.
    spoofed = [
        ("Transfer_Encoding", "chunked"),
        ("transfer_encoding", "chunked"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("x_forwarded_proto", "https"),
        ("X_FORWARDED_HOST", "evil.example"),
        ("X_Original_URL", "/admin"),
        ("X_Rewrite_URL", "/admin"),
        ("X_HTTP_Method_Override", "DELETE"),
        ("X_Method_Override", "DELETE"),
        ("X_Forwarded_Prefix", "/admin"),
        ("X_Real_IP", "6.6.6.6"),
        ("Keep_Alive", "timeout=5"),
        ("Proxy_Authorization", "Basic Zm9vOmJhcg=="),
        ("Proxy_Connection", "keep-alive"),
        ("X_Request_ID", "forged-id"),
        ("Connection", "X_Secret_Hop"),
        ("X-Secret-Hop", "1"),
        ("X-Kept", "yes"),
    ]
    echoed = await echo(gateway, "/echo/x", spoofed)
    names = folded_names(echoed)
    for name, _ in spoofed[:-1]:
        folded = name.lower().replace("_", "-")
        if folded in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"):
            assert names.count(folded) == 1, (folded, echoed["headers"])  # the gateway's own
        else:
            assert folded not in names, (folded, echoed["headers"])
    assert header_values(echoed, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(echoed, "X-Request-ID") != ["forged-id"]
    assert header_values(echoed, "X-Kept") == ["yes"]


IDENTITY_LIKE = [
    ("Remote-User", "admin"),
    ("remote_user", "admin"),
    ("REMOTE-GROUPS", "admins"),
    ("X-Remote-User", "admin"),
    ("X-Forwarded-User", "admin"),
    ("X_Forwarded_Email", "admin@example.com"),
    ("X-Auth-Request-User", "admin"),
    ("x_auth_request_email", "admin@example.com"),
    ("X-Auth-Request-Groups", "admins"),
    ("X-WebAuth-User", "admin"),
    ("Cf-Access-Authenticated-User-Email", "admin@example.com"),
    ("X-Goog-Authenticated-User-Email", "accounts.google.com:admin@example.com"),
]


async def test_identity_like_headers_of_other_auth_proxies_are_dropped_by_default(
    gateway: Gateway,
) -> None:
    for path, headers in (("/echo/x", {}), ("/echo/x", await bearer(gateway))):
        sent = [*IDENTITY_LIKE, ("X-Kept", "yes"), *headers.items()]
        echoed = await (await gateway.client.get(path, headers=sent)).json()
        names = folded_names(echoed)
        assert not {n.lower().replace("_", "-") for n, _ in IDENTITY_LIKE} & set(names), names
        assert header_values(echoed, "X-Kept") == ["yes"]


async def test_a_route_sets_its_own_list_of_dropped_headers(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(
        routes=[
            route("/echo/legacy/**", "public", drop_request_headers=["X-Legacy-*", "X-Tenant"]),
            route("/echo/none/**", "public", drop_request_headers=[]),
            route("/echo/**", "public"),
        ],
    )
    sent = [("X_Legacy_User", "admin"), ("x-tenant", "7"), ("Remote-User", "admin")]
    legacy = await echo(gw, "/echo/legacy/x", sent)
    assert folded_names(legacy).count("x-legacy-user") == 0
    assert folded_names(legacy).count("x-tenant") == 0
    assert header_values(legacy, "Remote-User") == ["admin"]  # the list replaced the default
    none = await echo(gw, "/echo/none/x", sent)
    assert header_values(none, "Remote-User") == ["admin"]
    default = await echo(gw, "/echo/x", sent)
    assert "remote-user" not in folded_names(default)
    assert header_values(default, "X_Legacy_User") == ["admin"]
    # The identity headers the gateway sets stay dropped whatever a route's list says.
    forged = await echo(gw, "/echo/none/x", FORGED_SPELLINGS)
    assert "x-user-id" not in folded_names(forged)


async def test_connection_header_cannot_drop_gateway_headers(gateway: Gateway) -> None:
    headers = {
        "Connection": "X-User-Id, X-Forwarded-For, X-User-Name, Content-Length",
        **(await bearer(gateway)),
    }
    echoed = await (await gateway.client.post("/echo/x", data=b"abc", headers=headers)).json()
    assert echoed["body_length"] == 3
    assert header_values(echoed, "X-Forwarded-For") == ["127.0.0.1"]
    who = await (await gateway.client.get("/whoami", headers=headers)).json()
    assert who["user_id"] == "1"


# What a client (or a proxy in front of the gateway) says about the original request.
CLAIMED_FORWARDING = {
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "app.example",
}


async def test_forwarded_headers_replace_an_untrusted_clients_values(gateway: Gateway) -> None:
    echoed = await echo(gateway, "/echo/x", CLAIMED_FORWARDING)
    assert header_values(echoed, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(echoed, "X-Forwarded-Proto") == ["http"]
    host = header_values(echoed, "X-Forwarded-Host")
    assert len(host) == 1 and host[0].startswith("127.0.0.1:")


async def test_forwarded_headers_extend_a_trusted_proxys_values(
    start_gateway: GatewayFactory,
) -> None:
    gw: Gateway = await start_gateway(server={"trusted_proxies": ["127.0.0.0/8"]})
    echoed = await echo(gw, "/echo/x", CLAIMED_FORWARDING)
    assert header_values(echoed, "X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"]
    assert header_values(echoed, "X-Forwarded-Proto") == ["https"]
    assert header_values(echoed, "X-Forwarded-Host") == ["app.example"]


async def test_host_is_the_upstreams_own(gateway: Gateway, upstream: TestServer) -> None:
    echoed = await echo(gateway, "/echo/x", {"Host": "evil.example"})
    assert header_values(echoed, "Host") == [f"{upstream.host}:{upstream.port}"]


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        ("Basic Z3Vhbmc6MTIzNDU2", "Authorization must use the Bearer scheme"),
        ("Bearer", "Authorization must be 'Bearer <token>'"),
        ("Bearer ", "Authorization must be 'Bearer <token>'"),
        ("Bearer a b", "Authorization must be 'Bearer <token>'"),
        ("Token abc", "Authorization must use the Bearer scheme"),
        ("Bearer not-a-jwt", "Invalid access token"),
    ],
)
async def test_bad_authorization_headers_are_401(
    guarded: tuple[Gateway, RecordingUpstream], authorization: str, message: str
) -> None:
    gw, upstream = guarded
    resp = await gw.client.get("/bbb", headers={"Authorization": authorization})
    assert resp.status == 401
    assert (await resp.json())["message"] == message
    assert upstream.seen == []


async def test_two_authorization_headers_are_refused(
    guarded: tuple[Gateway, RecordingUpstream],
) -> None:
    gw, upstream = guarded
    good = (await bearer(gw))["Authorization"]
    resp = await gw.client.get("/bbb", headers=[("Authorization", good), ("Authorization", good)])
    assert resp.status == 401
    assert upstream.seen == []


@pytest.mark.parametrize("forge", ["other-secret", "alg-none", "no-type", "wrong-audience"])
async def test_forged_tokens_are_refused(
    guarded: tuple[Gateway, RecordingUpstream], forge: str
) -> None:
    gw, upstream = guarded
    now = int(gw.clock())
    claims = access_claims(now, exp=now + 600, jti="x")
    if forge == "other-secret":
        token = jwt.encode(claims, random_secret(), algorithm="HS256")
    elif forge == "alg-none":
        token = jwt.encode(claims, "", algorithm="none")
    elif forge == "no-type":
        del claims["token_use"]
        token = jwt.encode(claims, TEST_SECRET, algorithm="HS256")
    else:
        token = jwt.encode({**claims, "aud": "someone-else"}, TEST_SECRET, algorithm="HS256")
    resp = await gw.client.get("/bbb", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert upstream.seen == []


async def test_nothing_unauthenticated_reaches_a_protected_upstream(
    guarded: tuple[Gateway, RecordingUpstream],
) -> None:
    gw, upstream = guarded
    for path in ("/bbb", "/private", "/private/", "/private/deep/x?y=1"):
        assert (await gw.client.get(path)).status == 401
    assert (await gw.client.get("/nowhere")).status == 404
    assert (await gw.client.post("/bbb")).status == 405
    assert upstream.seen == []
    assert (await gw.client.get("/open/ok")).status == 200
    assert upstream.paths() == ["/open/ok"]


async def test_unmatched_route_is_404_json(gateway: Gateway) -> None:
    resp = await gateway.client.get("/nope")
    assert resp.status == 404
    assert await resp.json() == error_body(404, "Not Found", "No route for /nope")


async def test_wrong_method_is_405_with_allow(gateway: Gateway) -> None:
    resp = await gateway.client.delete("/aaa")
    assert resp.status == 405
    assert resp.headers["Allow"] == "GET, HEAD"
    assert (await resp.json())["statusCode"] == 405


@pytest.mark.parametrize(
    ("target", "status", "reached"),
    [
        ("/open/a/../b", 200, "/open/b"),
        ("//open//a", 200, "/open/a"),
        ("/open/./a/.", 200, "/open/a/"),
        ("/open/%61%62", 200, "/open/ab"),
        ("/open/a%20b", 200, "/open/a%20b"),
        ("/open/../bbb", 401, None),
        ("/open/%2e%2e/bbb", 401, None),
        ("/open/%2E%2e/private/x", 401, None),
        ("/open%2fbbb", 400, None),
        ("/open/a%5c..%5cbbb", 400, None),
        ("/open/a%00", 400, None),
        ("/open/a;jsessionid=1", 400, None),
        ("/open/..;/bbb", 400, None),
        ("/../bbb", 400, None),
        ("/open/%zz", 400, None),
        ("/open/%ff", 400, None),
        ("/BBB", 404, None),
        ("/bbb/", 404, None),
    ],
)
async def test_path_spellings_route_on_what_is_forwarded(
    guarded: tuple[Gateway, RecordingUpstream], target: str, status: int, reached: str | None
) -> None:
    gw, upstream = guarded
    server = gw.client.server
    got, body = await raw_http(str(server.host), int(server.port or 0), target)
    assert got == status, body
    assert upstream.paths() == ([reached] if reached else [])


async def test_upstream_status_headers_and_redirects_pass_through(
    start_gateway: GatewayFactory, aiohttp_server: Callable[..., Any]
) -> None:
    payload = gzip.compress(b"hello " * 1000)

    async def created(request: web.Request) -> web.Response:
        resp = web.Response(status=201, body=b"made", headers={"X-Custom": "1", "Location": "/x"})
        resp.set_cookie("a", "1")
        resp.set_cookie("b", "2")
        return resp

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async def compressed(request: web.Request) -> web.Response:
        return web.Response(
            body=payload, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"}
        )

    app = web.Application()
    app.router.add_post("/up/created", created)
    app.router.add_get("/up/redirect", redirect)
    app.router.add_get("/up/gz", compressed)
    server = await aiohttp_server(app)
    gw: Gateway = await start_gateway(
        upstream_url=str(server.make_url("/")),
        routes=[route("/up/**", "public")],
    )
    made = await gw.client.post("/up/created")
    assert made.status == 201
    assert made.headers["X-Custom"] == "1"
    assert len(made.headers.getall("Set-Cookie")) == 2
    assert await made.read() == b"made"

    moved = await gw.client.get("/up/redirect", allow_redirects=False)
    assert moved.status == 302
    assert moved.headers["Location"] == "/elsewhere"

    gz = await gw.client.get("/up/gz", auto_decompress=False)
    assert gz.headers["Content-Encoding"] == "gzip"
    assert gz.headers["Content-Length"] == str(len(payload))
    assert await gz.read() == payload


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_upstream_down_is_502(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(upstream_url=f"http://127.0.0.1:{closed_port()}")
    resp = await gw.client.get("/aaa")
    assert resp.status == 502
    assert await resp.json() == error_body(502, "Bad Gateway", "Upstream 'demo' is unreachable")


async def test_slow_upstream_is_504(gateway_before: GatewayFactory) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    gw: Gateway = await gateway_before({"/aaa": slow}, upstream={"timeout": "200ms"})
    resp = await gw.client.get("/aaa")
    assert resp.status == 504
    body = await resp.json()
    assert body == error_body(504, "Gateway Timeout", "Upstream 'demo' did not answer within 0.2s")


async def test_one_upstream_down_leaves_others_working(
    start_gateway: GatewayFactory,
) -> None:
    gw: Gateway = await start_gateway(
        extra_upstreams={"dead": {"url": f"http://127.0.0.1:{closed_port()}"}},
        routes=[
            route("/aaa", "public"),
            {"path": "/dead/**", "upstream": "dead", "auth": "public"},
        ],
    )
    assert (await gw.client.get("/dead/x")).status == 502
    assert (await gw.client.get("/aaa")).status == 200
