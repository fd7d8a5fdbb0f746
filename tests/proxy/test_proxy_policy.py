"""Per-route policy and request-level policy: request ids, Host, optional auth, roles, rewrites,
body and header limits, CORS, Expect: 100-continue, client disconnects, case handling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.appkeys import STORE
from tests.support.errors import error_body
from tests.support.gateways import Gateway, GatewayFactory, route
from tests.support.upstreams import RecordingUpstream
from tests.support.wire import connect, raw_http


def header_values(echoed: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echoed["headers"] if k.lower() == name.lower()]


async def bearer(gw: Gateway, username: str = "guang", password: str = "123456") -> dict[str, str]:
    pair = await gw.login(username, password)
    return {"Authorization": f"Bearer {pair['access_token']}"}


# --- request ids ------------------------------------------------------------------------------


async def test_request_id_is_generated_sent_upstream_and_returned(gateway: Gateway) -> None:
    resp = await gateway.client.get("/echo/x")
    request_id = resp.headers["X-Request-ID"]
    assert len(request_id) == 32
    assert header_values(await resp.json(), "X-Request-ID") == [request_id]


async def test_valid_request_id_is_propagated(gateway: Gateway) -> None:
    resp = await gateway.client.get("/echo/x", headers={"X-Request-ID": "trace-42.a:b"})
    assert resp.headers["X-Request-ID"] == "trace-42.a:b"
    assert header_values(await resp.json(), "X-Request-ID") == ["trace-42.a:b"]


@pytest.mark.parametrize("offered", ["has space", "x" * 200, "semi;colon", "ünï"])
async def test_invalid_request_id_is_replaced(gateway: Gateway, offered: str) -> None:
    resp = await gateway.client.get(
        "/echo/x", headers=[("X-Request-ID", offered.encode().decode("latin-1"))]
    )
    assert resp.headers["X-Request-ID"] != offered
    assert header_values(await resp.json(), "X-Request-ID") == [resp.headers["X-Request-ID"]]


async def test_error_responses_carry_the_request_id(gateway: Gateway) -> None:
    for path in ("/bbb", "/nowhere"):
        resp = await gateway.client.get(path, headers={"X-Request-ID": "abc"})
        assert resp.status in (401, 404)
        assert resp.headers["X-Request-ID"] == "abc"


# --- per-route policy -------------------------------------------------------------------------


async def test_host_is_preserved_only_where_the_route_asks(
    start_gateway: GatewayFactory, upstream: TestServer
) -> None:
    gw: Gateway = await start_gateway(
        routes=[
            route("/echo/own/**", "public"),
            route("/echo/keep/**", "public", preserve_host=True),
        ]
    )
    own = await (await gw.client.get("/echo/own/x", headers={"Host": "app.example"})).json()
    kept = await (await gw.client.get("/echo/keep/x", headers={"Host": "app.example"})).json()
    assert header_values(own, "Host") == [f"{upstream.host}:{upstream.port}"]
    assert header_values(kept, "Host") == ["app.example"]


async def test_optional_auth_forwards_identity_only_for_a_valid_token(
    start_gateway: GatewayFactory,
) -> None:
    gw: Gateway = await start_gateway(routes=[route("/echo/**", "optional")], demo_user=True)
    anonymous = await (await gw.client.get("/echo/x")).json()
    assert header_values(anonymous, "X-User-Id") == []
    known = await (await gw.client.get("/echo/x", headers=await bearer(gw))).json()
    assert header_values(known, "X-User-Id") == ["1"]
    spoiled = await gw.client.get(
        "/echo/x", headers={"Authorization": "Bearer spoiled", "X-User-Id": "666"}
    )
    assert spoiled.status == 200
    assert header_values(await spoiled.json(), "X-User-Id") == []
    basic = await gw.client.get("/echo/x", headers={"Authorization": "Basic eDp5"})
    assert basic.status == 200


async def test_roles_are_required_and_forwarded(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(
        routes=[route("/echo/admin/**", roles=["admin", "ops"]), route("/echo/any/**")]
    )
    user = await gw.add_user()
    plain = await bearer(gw)
    denied = await gw.client.get("/echo/admin/x", headers=plain)
    assert denied.status == 403
    assert await denied.json() == error_body(
        403, "Forbidden", "Requires one of the roles: admin, ops"
    )
    assert "WWW-Authenticate" not in denied.headers  # 403 must not make clients refresh
    await gw.app[STORE].set_roles(user.id, ("ops", "viewer"))
    allowed = await gw.client.get("/echo/admin/x", headers=await bearer(gw))
    assert allowed.status == 200
    assert header_values(await allowed.json(), "X-User-Roles") == ["ops,viewer"]


async def test_roles_reach_old_sessions_at_the_next_refresh(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(routes=[route("/echo/**", roles=["admin"])])
    user = await gw.add_user()
    pair = await gw.login()
    await gw.app[STORE].set_roles(user.id, ("admin",))
    old = {"Authorization": f"Bearer {pair['access_token']}"}
    assert (await gw.client.get("/echo/x", headers=old)).status == 403
    renewed = await (await gw.refresh(pair)).json()
    new = {"Authorization": f"Bearer {renewed['access_token']}"}
    assert (await gw.client.get("/echo/x", headers=new)).status == 200


async def test_strip_and_add_prefix(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(
        routes=[route("/api/**", "public", strip_prefix="/api", add_prefix="/echo/v1")]
    )
    deep = await (await gw.client.get("/api/users/7?x=1")).json()
    assert (deep["path"], deep["query"]) == ("/echo/v1/users/7", "x=1")
    root = await (await gw.client.get("/api")).json()
    assert root["path"] == "/echo/v1"


async def test_request_body_over_the_route_limit_is_413(
    gateway_before: GatewayFactory,
) -> None:
    upstream = RecordingUpstream()
    gw: Gateway = await gateway_before(
        upstream.app,
        routes=[route("/up/**", "public", max_body_size="1KiB")],
    )
    fits = await gw.client.post("/up/a", data=b"x" * 1024)
    assert fits.status == 200
    declared = await gw.client.post("/up/b", data=b"x" * 1025)
    assert declared.status == 413
    assert await declared.json() == error_body(
        413, "Request Entity Too Large", "Request body is larger than 1024 bytes"
    )

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 512

    streamed = await gw.client.post("/up/c", data=chunks())
    assert streamed.status == 413
    assert upstream.paths() == ["/up/a"]  # neither oversized request was answered upstream


async def test_too_many_or_too_large_headers_are_431(gateway: Gateway) -> None:
    many = await gateway.client.get("/aaa", headers=[(f"X-H{i}", "v") for i in range(120)])
    assert many.status == 431
    # 120 of ours plus the client's own Host, Accept, Accept-Encoding, User-Agent.
    assert (await many.json())["message"] == "Too many request headers (124; the limit is 100)"
    large = await gateway.client.get("/aaa", headers={f"X-Big{i}": "v" * 8000 for i in range(5)})
    assert large.status == 431
    assert (await large.json())["error"] == "Request Header Fields Too Large"
    fine = await gateway.client.get("/aaa", headers={f"X-H{i}": "v" * 100 for i in range(50)})
    assert fine.status == 200


async def test_expect_100_continue(gateway: Gateway) -> None:
    reader, writer = await connect(gateway.client.server)
    try:
        writer.write(
            b"PUT /echo/expect HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"hello")
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert response.startswith(b"HTTP/1.1 200")
    assert b'"body_length": 5' in response
    assert b"Expect" not in response.split(b"\r\n\r\n", 1)[1]  # answered here, not forwarded


async def test_client_disconnect_cancels_the_upstream_request(
    start_gateway: GatewayFactory, aiohttp_server: Callable[..., Any]
) -> None:
    events: list[str] = []
    started = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        return web.Response(text="late")

    app = web.Application(handler_args={"handler_cancellation": True})
    app.router.add_get("/slow", slow)
    server = await aiohttp_server(app)
    gw: Gateway = await start_gateway(
        upstream_url=str(server.make_url("/")),
        routes=[route("/slow", "public")],
    )
    host, port = str(gw.client.server.host), int(gw.client.server.port or 0)
    _, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(started.wait(), 5)
    writer.close()
    for _ in range(100):
        if events:
            break
        await asyncio.sleep(0.05)
    assert events == ["cancelled"]


async def test_case_insensitive_paths_when_configured(gateway_before: GatewayFactory) -> None:
    upstream = RecordingUpstream()
    gw: Gateway = await gateway_before(
        upstream.app,
        server={"case_sensitive_paths": False},
        routes=[route("/**", "public"), route("/Admin/**")],
    )
    for spelling in ("/admin/x", "/ADMIN/x", "/aDmIn"):
        assert (await gw.client.get(spelling)).status == 401
    assert (await gw.client.get("/Other")).status == 200
    assert upstream.paths() == ["/Other"]  # forwarded with the client's case


async def test_case_sensitive_paths_by_default(gateway_before: GatewayFactory) -> None:
    upstream = RecordingUpstream()
    gw: Gateway = await gateway_before(
        upstream.app,
        routes=[route("/admin/**")],
    )
    assert (await gw.client.get("/ADMIN/x")).status == 404
    status, _ = await raw_http(
        str(gw.client.server.host), int(gw.client.server.port or 0), "/Admin"
    )
    assert status == 404
    assert upstream.seen == []


# --- CORS -------------------------------------------------------------------------------------

ORIGIN = "http://localhost:3001"


@pytest.fixture
async def cors_gateway(start_gateway: GatewayFactory) -> Gateway:
    gw: Gateway = await start_gateway(
        cors={"allowed_origins": [ORIGIN, "http://127.0.0.1:3001"]}, demo_user=True
    )
    return gw


async def test_preflight_on_a_protected_route_needs_no_token(cors_gateway: Gateway) -> None:
    resp = await cors_gateway.client.options(
        "/bbb",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    assert "GET" in resp.headers["Access-Control-Allow-Methods"]
    assert resp.headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in resp.headers.getall("Vary")


async def test_preflight_for_the_gateways_own_endpoints(cors_gateway: Gateway) -> None:
    for path, method in (("/user/login", "POST"), ("/user/refresh", "GET")):
        resp = await cors_gateway.client.options(
            path,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (
            {"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
            "Origin http://evil.example is not allowed",
        ),
        (
            {"Origin": ORIGIN, "Access-Control-Request-Method": "TRACE"},
            "Method TRACE is not allowed for cross-origin requests",
        ),
        (
            {
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "x-user-id",
            },
            "Header(s) x-user-id are not allowed for cross-origin requests",
        ),
    ],
)
async def test_refused_preflights(
    cors_gateway: Gateway, headers: dict[str, str], message: str
) -> None:
    resp = await cors_gateway.client.options("/bbb", headers=headers)
    assert resp.status == 403
    assert (await resp.json())["message"] == message
    assert "Access-Control-Allow-Origin" not in resp.headers or headers["Origin"] == ORIGIN


async def test_cors_headers_on_answers_including_401(cors_gateway: Gateway) -> None:
    denied = await cors_gateway.client.get("/bbb", headers={"Origin": ORIGIN})
    assert denied.status == 401
    assert denied.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "WWW-Authenticate" in denied.headers["Access-Control-Expose-Headers"]
    ok = await cors_gateway.client.get(
        "/bbb", headers={"Origin": ORIGIN, **(await bearer(cors_gateway))}
    )
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Access-Control-Allow-Credentials" not in ok.headers
    stranger = await cors_gateway.client.get("/aaa", headers={"Origin": "http://evil.example"})
    assert stranger.status == 200
    assert "Access-Control-Allow-Origin" not in stranger.headers


async def test_upstream_cors_headers_give_way_to_the_gateways(
    gateway_before: GatewayFactory,
) -> None:
    async def loose(request: web.Request) -> web.Response:
        return web.Response(
            text="x",
            headers={
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Credentials": "true",
            },
        )

    gw: Gateway = await gateway_before(
        {"/loose": loose},
        routes=[route("/loose", "public")],
        cors={"allowed_origins": [ORIGIN]},
    )
    resp = await gw.client.get("/loose", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert "Access-Control-Allow-Credentials" not in resp.headers


def test_wildcard_origin_with_credentials_is_a_config_error() -> None:
    from gateway.config import parse_config
    from gateway.errors import ConfigError
    from tests.support.gateways import TEST_SECRET

    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "tokens": {"secret": TEST_SECRET},
                "upstreams": {"u": {"url": "http://h"}},
                "cors": {"allowed_origins": ["*"], "allow_credentials": True},
            },
            environ={},
        )
    assert any("cannot be true when allowed_origins has '*'" in p for p in info.value.problems)
