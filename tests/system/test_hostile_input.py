"""Inputs meant to break things: each gets a clear 4xx, nothing reaches where it should not."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from aiohttp import web

from gateway.appkeys import PASSWORDS, STORE
from gateway.config import PARSER_FIELD_LIMIT
from gateway.storage import Session
from gateway.telemetry.redaction import ParseErrorRedactor
from tests.support.gateways import (
    TEST_SECRET,
    Gateway,
    GatewayFactory,
    access_claims,
    bearer_of,
    route,
)
from tests.support.processes import Deployment, Processes
from tests.support.upstreams import RecordingUpstream
from tests.support.wire import raw_http


@pytest.fixture
async def recorded(gateway_before: GatewayFactory) -> tuple[Gateway, RecordingUpstream]:
    upstream = RecordingUpstream()
    gw: Gateway = await gateway_before(
        upstream.app,
        routes=[route("/**", "public"), route("/bbb")],
    )
    await gw.add_user()
    return gw, upstream


async def test_compressed_request_bodies_are_forwarded_as_sent(gateway: Gateway) -> None:
    compressed = gzip.compress(b'{"amount": 100}' * 50)
    resp = await gateway.client.post(
        "/echo/upload", data=compressed, headers={"Content-Encoding": "gzip"}
    )
    echoed = await resp.json()
    assert echoed["body_length"] == len(compressed)
    encodings = [v for k, v in echoed["headers"] if k.lower() == "content-encoding"]
    assert encodings == ["gzip"]


async def test_json_endpoints_refuse_encoded_bodies(gateway: Gateway) -> None:
    for body in (gzip.compress(b'{"username": "guang", "password": "123456"}'), b"abc"):
        resp = await gateway.client.post(
            "/user/login", data=body, headers={"Content-Encoding": "gzip"}
        )
        assert resp.status == 415
        assert (await resp.json())["message"].startswith("Content-Encoding gzip is not accepted")


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            b'{"username": "guang", "password": "\\ud800"}',
            400,
            "'password' is not valid Unicode text",
        ),
        (b"[" * 5000, 400, "Request body is nested too deeply"),
        (b'{"refresh_token": "\\ud800"}', 400, "'refresh_token' is not valid Unicode text"),
    ],
)
async def test_bodies_that_used_to_crash(
    gateway: Gateway, body: bytes, status: int, message: str
) -> None:
    path = "/user/refresh" if b"refresh_token" in body else "/user/login"
    resp = await gateway.client.post(path, data=body, headers={"Content-Type": "application/json"})
    assert (resp.status, (await resp.json())["message"]) == (status, message)


async def test_non_ascii_tokens_are_401(recorded: tuple[Gateway, RecordingUpstream]) -> None:
    gw, upstream = recorded
    server = gw.client.server
    host, port = str(server.host), int(server.port or 0)
    status, _ = await raw_http(host, port, "/bbb", headers="Authorization: Bearer abc\xff\r\n")
    assert status == 401
    status, _ = await raw_http(
        host,
        port,
        "/user/logout",
        method="POST",
        headers="Authorization: Bearer abc\xff\r\nContent-Length: 0\r\n",
    )
    assert status == 200
    assert upstream.seen == []


async def test_tokens_with_infinite_expiry_are_refused(
    recorded: tuple[Gateway, RecordingUpstream],
) -> None:
    gw, upstream = recorded
    claims = access_claims(0, sid="0" * 32, exp=float("inf"), jti="x")
    token = jwt.encode(claims, TEST_SECRET, algorithm="HS256")
    resp = await gw.client.get("/bbb", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 401
    assert upstream.seen == []


async def test_control_characters_in_the_path_are_400(
    recorded: tuple[Gateway, RecordingUpstream],
) -> None:
    gw, upstream = recorded
    server = gw.client.server
    forged = "/x%0a2026-11-27 WARNING gateway.security: forged".replace(" ", "%20")
    status, body = await raw_http(str(server.host), int(server.port or 0), forged)
    assert status == 400
    assert b'"statusCode": 400' in body
    assert upstream.seen == []


@pytest.mark.parametrize(
    "target",
    ["//user/refresh?refresh_token=secret", "/user/./login", "/user/x/../logout", "/user//refresh"],
)
async def test_odd_spellings_of_own_endpoints_are_not_forwarded(
    recorded: tuple[Gateway, RecordingUpstream], target: str
) -> None:
    gw, upstream = recorded
    server = gw.client.server
    status, _ = await raw_http(
        str(server.host),
        int(server.port or 0),
        target,
        method="POST",
        headers="Content-Length: 0\r\n",
    )
    assert status == 404
    assert upstream.seen == []


async def test_routing_and_method_override_headers_never_reach_upstreams(gateway: Gateway) -> None:
    sent = {
        "X-Original-URL": "/bbb",
        "X-Rewrite-URL": "/bbb",
        "X-HTTP-Method-Override": "DELETE",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Prefix": "/admin",
        "X-Forwarded-Ssl": "on",
        "X-Original-URI": "/aaa",
        "X-Original-Method": "GET",
        "X-Forwarded-Uri": "/aaa",
        "X-Forwarded-Method": "GET",
    }
    echoed = await (await gateway.client.get("/echo/x", headers=sent)).json()
    names = {k.lower() for k, _ in echoed["headers"]}
    assert names.isdisjoint(k.lower() for k in sent)


async def test_upstream_cannot_strip_content_length_through_connection(
    start_gateway: GatewayFactory,
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n"
            b"Content-Type: text/plain\r\n\r\nhello"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw: Gateway = await start_gateway(
            upstream_url=f"http://127.0.0.1:{port}",
            routes=[route("/raw", "public")],
        )
        resp = await gw.client.get("/raw")
        assert resp.headers["Content-Length"] == "5"
        assert await resp.read() == b"hello"
    finally:
        server.close()


@pytest.fixture
def unresponsive_port() -> Iterator[int]:
    """A port whose accept queue is full: connecting hangs until the connect timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    yield port
    for sock in (*fillers, listener):
        sock.close()


async def test_connect_timeout_is_502(
    start_gateway: GatewayFactory, unresponsive_port: int
) -> None:
    gw: Gateway = await start_gateway(
        upstream_url=f"http://127.0.0.1:{unresponsive_port}",
        upstream={"connect_timeout": "300ms"},
    )
    resp = await gw.client.get("/aaa")
    assert resp.status == 502
    assert (await resp.json())["message"] == "Upstream 'demo' is unreachable"


async def test_logout_with_an_expired_access_token_ends_the_session(gateway: Gateway) -> None:
    pair = await gateway.login()
    gateway.clock.advance(3600)  # the access token expired long ago; the session lives on
    resp = await gateway.client.post("/user/logout", headers=bearer_of(pair))
    assert resp.status == 200
    refresh = await gateway.refresh(pair)
    assert refresh.status == 401


async def test_session_is_not_created_for_a_password_changed_during_login(
    gateway: Gateway,
) -> None:
    store = gateway.app[STORE]
    user = await store.get_user_by_name("guang")
    assert user is not None
    session = Session(
        id="a" * 32,
        user_id=user.id,
        created_at=0,
        last_used_at=0,
        expires_at=9e9,
        refresh_issued_at=0,
        refresh_expires_at=2**31,
        current_jti="b" * 32,
    )
    new_hash = await gateway.app[PASSWORDS].hash("changed-by-admin")
    await store.set_password_hash(user.id, new_hash)
    assert not await store.create_session(session, password_hash=user.password_hash)
    assert await store.create_session(session, password_hash=new_hash)
    await store.set_disabled("guang", True)
    second = Session(**{**{f: getattr(session, f) for f in Session.__slots__}, "id": "c" * 32})
    assert not await store.create_session(second, password_hash=new_hash)


async def test_login_racing_a_password_change_is_refused(gateway: Gateway) -> None:
    # Hold the login between verifying the old password and creating its session, change the
    # password there (as `gateway user passwd` would), then let the login finish.
    passwords = gateway.app[PASSWORDS]
    verified, proceed = asyncio.Event(), asyncio.Event()
    real_verify = passwords.verify

    async def verify_then_wait(password_hash: str, password: str) -> bool:
        result = await real_verify(password_hash, password)
        verified.set()
        await proceed.wait()
        return result

    passwords.verify = verify_then_wait  # type: ignore[method-assign]
    login = asyncio.create_task(
        gateway.client.post("/user/login", json={"username": "guang", "password": "123456"})
    )
    await asyncio.wait_for(verified.wait(), 10)
    store = gateway.app[STORE]
    user = await store.get_user_by_name("guang")
    assert user is not None
    await store.set_password_hash(user.id, await passwords.hash("new-password-1"))
    proceed.set()
    resp = await login
    assert resp.status == 401
    assert await store.list_sessions(user.id) == []


def test_parse_error_logs_lose_the_offending_line() -> None:
    import logging

    try:
        raise ValueError("Authorization : Bearer SECRET-TOKEN")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "aiohttp.server",
            logging.ERROR,
            __file__,
            1,
            "Error handling request from %s",
            ("10.0.0.1",),
            sys.exc_info(),
        )
    assert ParseErrorRedactor().filter(record)
    text = logging.Formatter().format(record)
    assert "SECRET-TOKEN" not in text
    assert text == "refused a malformed request from 10.0.0.1 (ValueError)"


def test_malformed_requests_log_a_warning_at_most_every_interval() -> None:
    import logging

    now = [0.0]
    redactor = ParseErrorRedactor(interval=10.0, clock=lambda: now[0])

    def record() -> logging.LogRecord:
        return logging.LogRecord(
            "aiohttp.server",
            logging.ERROR,
            __file__,
            1,
            "Error handling request from %s",
            ("10.0.0.1",),
            None,
        )

    first = record()
    assert redactor.filter(first) and first.levelno == logging.WARNING
    assert [redactor.filter(record()) for _ in range(500)] == [False] * 500
    now[0] = 10.5
    later = record()
    assert redactor.filter(later)
    assert later.getMessage() == (
        "refused a malformed request from 10.0.0.1 (unknown error);"
        " 500 more since the last such line"
    )


# --- #13 item 7: what a security review flags ----------------------------------------------


async def test_the_server_header_names_no_versions_and_the_upstreams_is_dropped(
    gateway_before: Any,
) -> None:
    async def versioned(request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"Server": "nginx/1.2.3 (Ubuntu)"})

    gw: Gateway = await gateway_before({"/echo/x": versioned})
    proxied = await gw.client.get("/echo/x")
    own = await gw.client.get("/healthz")
    error = await gw.client.get("/nowhere")
    for resp in (proxied, own, error):
        assert resp.headers.getall("Server") == ["auth-gateway"], resp.headers
    assert "nosniff" not in proxied.headers.get("X-Content-Type-Options", "")
    for resp in (own, error):
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


# What aiohttp's parser refuses before any app sees it, with the gateway's answer to it.
PARSER_REFUSALS = [
    pytest.param(
        b"G<script>T /aaa HTTP/1.1\r\nHost: x\r\n\r\n",
        "The request line does not start with an HTTP method",
        id="garbage-method",
    ),
    pytest.param(
        b"GET /aaa HTTP/1.1\r\nHost: x\r\nBad<script>Header: 1\r\n\r\n",
        "The request line or a header is malformed",
        id="invalid-header-name",
    ),
    pytest.param(
        b"GET /<script>" + b"a" * PARSER_FIELD_LIMIT + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        "A request line or header is longer than the parser allows",
        id="line-over-the-limit",
    ),
]


async def refused_answer(host: str, port: int, request: bytes) -> tuple[bytes, bytes]:
    """The head and body of the answer to `request`, read until the gateway closes."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)  # EOF: it closed
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def assert_refused_in_our_shape(head: bytes, body: bytes, message: str) -> None:
    lines = head.split(b"\r\n")
    headers = {k.lower(): v for k, _, v in (line.partition(b": ") for line in lines[1:])}
    # Its version could not be read: the answer claims no more than HTTP/1.0.
    assert lines[0] == b"HTTP/1.0 400 Bad Request", head
    assert headers[b"content-type"] == b"application/json; charset=utf-8"
    assert headers[b"server"] == b"auth-gateway"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert json.loads(body) == {"statusCode": 400, "message": message, "error": "Bad Request"}
    for leaked in (b"aiohttp", b"Python", b"<script>"):
        assert leaked not in head + body


@pytest.mark.parametrize(("request_bytes", "message"), PARSER_REFUSALS)
async def test_requests_the_parser_refuses_get_the_json_shape_and_no_versions(
    gateway: Gateway, request_bytes: bytes, message: str
) -> None:
    server = gateway.client.server
    head, body = await refused_answer(str(server.host), int(server.port or 0), request_bytes)
    assert_refused_in_our_shape(head, body, message)


async def test_gateway_serve_answers_parser_refusals_in_the_json_shape(
    tmp_path: Any, processes: Processes
) -> None:
    deployment = Deployment.create(
        processes, tmp_path, database_url=f"sqlite:///{tmp_path / 'gw.db'}"
    )
    _, base = deployment.start_gateway()
    port = int(base.rsplit(":", 1)[1])
    head, body = await refused_answer("127.0.0.1", port, b"\x16\x03\x01 / HTTP/1.1\r\n\r\n")
    assert_refused_in_our_shape(head, body, "The request line does not start with an HTTP method")


async def test_an_http2_request_line_is_505_in_http1(gateway: Gateway) -> None:
    server = gateway.client.server
    reader, writer = await asyncio.open_connection(str(server.host), int(server.port or 0))
    writer.write(b"GET /aaa HTTP/2.0\r\nHost: x\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 505"), answer[:200]
    assert b'"statusCode": 505' in rest


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"nbf": 4_000_000_000}, "Access token not yet valid"),
        ({"nbf": "soon"}, "Access token not yet valid"),
        ({"aud": ["auth-gateway", "someone-else"]}, "Invalid access token"),
        ({"username": "guang\r\nX-User-Id: 0"}, "Invalid access token"),
        ({"username": "guang\x00"}, "Invalid access token"),
        ({"roles": ["admin\r\nX-Evil: 1"]}, "Invalid access token"),
        ({"roles": ["admin,root"]}, "Invalid access token"),
    ],
)
async def test_claims_that_matter_after_a_key_leak_are_checked(
    gateway: Gateway, overrides: dict[str, Any], message: str
) -> None:
    # Signed with the real key, as a leaked key would sign them: still refused, never a 500.
    def bearer(**changes: Any) -> dict[str, str]:
        claims = access_claims(gateway.clock(), sid="0" * 32, **changes)
        return {"Authorization": f"Bearer {jwt.encode(claims, TEST_SECRET, algorithm='HS256')}"}

    assert (await gateway.client.get("/bbb", headers=bearer())).status == 200  # the baseline
    resp = await gateway.client.get("/bbb", headers=bearer(**overrides))
    assert (resp.status, (await resp.json())["message"]) == (401, message)


async def test_error_messages_quote_request_input_escaped(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(cors={"allowed_origins": ["https://app.example"]})
    server = gw.client.server
    for target in ("/%3Cscript%3Ealert(1)%3C/script%3E", "/<script>alert(1)</script>"):
        status, body = await raw_http(str(server.host), int(server.port or 0), target)
        assert status in (400, 404), body
        message = json.loads(body)["message"]
        assert "<" not in message and ">" not in message, message
    refused = await gw.client.options(
        "/aaa",
        headers={
            "Origin": 'https://evil.example"><img src=x onerror=alert(1)>',
            "Access-Control-Request-Method": "GET",
        },
    )
    assert refused.status == 403
    text = (await refused.json())["message"]
    assert "<" not in text and '"' not in text, text
    assert text.startswith("Origin https://evil.example\\x22\\x3e\\x3cimg"), text
    long = await gw.client.get("/" + "a" * 5000)
    assert len((await long.json())["message"]) < 200


async def test_expect_100_continue_on_a_protected_route_gets_401_before_any_body(
    gateway: Gateway,
) -> None:
    server = gateway.client.server
    host, port = str(server.host), int(server.port or 0)

    async def expecting(headers: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            f"POST /private/x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            f"Content-Length: 5\r\n{headers}\r\n".encode()
        )
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        return reader, writer, first

    # No token: the 401 comes at once, with no 100 Continue before it and no body sent.
    reader, writer, first = await expecting("")
    assert first.startswith(b"HTTP/1.1 401"), first
    assert b"Connection: close" in first
    writer.close()
    # A valid token: 100 Continue first, then the body goes through.
    token = (await gateway.login())["access_token"]
    reader, writer, first = await expecting(f"Authorization: Bearer {token}\r\n")
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n", first
    writer.write(b"hello")
    await writer.drain()
    final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    assert not final.startswith(b"HTTP/1.1 401"), final
    writer.close()
