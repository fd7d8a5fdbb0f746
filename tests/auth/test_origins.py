"""The CSRF rule for cookie sessions, on real requests: an unsafe request by cookie must come
from the gateway's own origin (or a trusted one)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.auth.origins import OriginPolicy, normalize_origin
from gateway.errors import Forbidden

Client = TestClient[web.Request, web.Application]
TRUSTED = ["https://admin.example", "http://LOCALHOST:3001"]


async def _client(aiohttp_client: Callable[..., Any], policy: OriginPolicy) -> Client:
    async def check(request: web.Request) -> web.Response:
        try:
            policy.check(request)
        except Forbidden as exc:
            return web.Response(status=403, text=exc.message)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/x", check)
    result: Client = await aiohttp_client(app)
    return result


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any]) -> Client:
    return await _client(aiohttp_client, OriginPolicy(TRUSTED, ()))


def own(client: Client) -> str:
    return str(client.make_url("")).rstrip("/")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda own: {"Origin": own}, id="own origin"),
        pytest.param(lambda own: {"Origin": own.upper()}, id="own origin in capitals"),
        pytest.param(lambda own: {"Origin": own.replace("http:", "https:")}, id="own host, https"),
        pytest.param(lambda own: {"Origin": "https://admin.example"}, id="trusted"),
        pytest.param(lambda own: {"Origin": "https://admin.example:443"}, id="trusted, port"),
        pytest.param(lambda own: {"Origin": "http://localhost:3001"}, id="trusted, normalized"),
        pytest.param(lambda own: {"Sec-Fetch-Site": "same-origin"}, id="no Origin, same-origin"),
        pytest.param(
            lambda own: {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
            id="null origin under no-referrer, same-origin",
        ),
    ],
)
async def test_allowed(client: Client, headers: Callable[[str], dict[str, str]]) -> None:
    response = await client.post("/x", headers=headers(own(client)))
    assert (response.status, await response.text()) == (200, "ok")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"Origin": "https://evil.example"}, id="other site"),
        pytest.param({"Origin": "http://127.0.0.1"}, id="same host, other port"),
        pytest.param({"Origin": "https://admin.example.evil.example"}, id="suffix of trusted"),
        pytest.param({"Origin": "http://admin.example"}, id="trusted host over http"),
        pytest.param({"Origin": "null"}, id="null origin"),
        pytest.param({"Origin": "null", "Sec-Fetch-Site": "cross-site"}, id="sandboxed frame"),
        pytest.param({"Sec-Fetch-Site": "same-site"}, id="sibling subdomain"),
        pytest.param({"Sec-Fetch-Site": "cross-site"}, id="cross-site without Origin"),
        pytest.param({"Sec-Fetch-Site": "none"}, id="user-typed without Origin"),
        pytest.param({}, id="neither header"),
        pytest.param({"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"}, id="lie"),
        pytest.param({"Origin": "javascript:alert(1)"}, id="not an origin"),
    ],
)
async def test_refused(client: Client, headers: dict[str, str]) -> None:
    response = await client.post("/x", headers=headers)
    assert response.status == 403
    assert (await response.text()).startswith("Cross-origin request refused")


async def test_two_origin_headers_are_refused(client: Client) -> None:
    response = await client.post("/x", headers=[("Origin", own(client)), ("Origin", own(client))])
    assert response.status == 403


async def test_behind_a_trusted_proxy_the_forwarded_host_is_ours(
    aiohttp_client: Callable[..., Any],
) -> None:
    proxies = [ipaddress.ip_network("127.0.0.0/8")]
    client = await _client(aiohttp_client, OriginPolicy((), proxies))
    forwarded = {"X-Forwarded-Host": "app.example", "X-Forwarded-Proto": "https"}
    ok = await client.post("/x", headers={**forwarded, "Origin": "https://app.example"})
    assert ok.status == 200
    refused = await client.post("/x", headers={**forwarded, "Origin": own(client)})
    assert refused.status == 403


async def test_a_client_cannot_forward_its_own_host(client: Client) -> None:
    forged = {"X-Forwarded-Host": "evil.example", "Origin": "https://evil.example"}
    assert (await client.post("/x", headers=forged)).status == 403


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://A.example", "https://a.example"),
        ("https://a.example:443", "https://a.example"),
        ("http://a.example:80", "http://a.example"),
        ("http://a.example:8080", "http://a.example:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("https://a.example/", None),
        ("https://a.example/path", None),
        ("ftp://a.example", None),
        ("https://user@a.example", None),
        ("null", None),
        ("", None),
    ],
)
def test_normalize_origin(text: str, expected: str | None) -> None:
    assert normalize_origin(text) == expected
