"""The session cookies: their attributes, which set a request uses, reading and stripping."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.auth.cookies import CSRF_MAX_AGE, SessionCookies, cookie_names, strip_cookies
from gateway.auth.tokens import TokenPair
from gateway.config import BrowserConfig
from tests.support.cookies import SetCookie

PAIR = TokenPair("a.b.c", "d.e.f", 1800, 604800)


def attributes(header: str) -> tuple[str, str, dict[str, str]]:
    cookie = SetCookie.parse(header)
    return cookie.name, cookie.value, cookie.attributes


def test_session_cookies_are_host_only_httponly_secure_and_lax() -> None:
    cookies = SessionCookies(BrowserConfig(), ())
    access, refresh = (attributes(h) for h in cookies.secure.session(PAIR))
    assert access == (
        "__Host-gateway-access",
        "a.b.c",
        {"path": "/", "max-age": "1800", "httponly": "", "samesite": "Lax", "secure": ""},
    )
    assert refresh == (
        "__Host-gateway-refresh",
        "d.e.f",
        {"path": "/", "max-age": "604800", "httponly": "", "samesite": "Lax", "secure": ""},
    )
    for header in cookies.secure.session(PAIR):
        assert "domain" not in header.lower() and "expires" not in header.lower()


def test_the_csrf_cookie_is_strict() -> None:
    name, value, attrs = attributes(SessionCookies(BrowserConfig(), ()).secure.csrf_token("t"))
    assert (name, value) == ("__Host-gateway-csrf", "t")
    assert attrs == {
        "path": "/",
        "max-age": str(CSRF_MAX_AGE),
        "httponly": "",
        "samesite": "Strict",
        "secure": "",
    }


def test_cleared_cookies_expire_at_once_with_the_same_attributes() -> None:
    cleared = [attributes(h) for h in SessionCookies(BrowserConfig(), ()).secure.cleared()]
    assert [(name, value, attrs["max-age"]) for name, value, attrs in cleared] == [
        ("__Host-gateway-access", "", "0"),
        ("__Host-gateway-refresh", "", "0"),
    ]
    # A __Host- cookie is only replaced by one with Secure and Path=/.
    assert all("secure" in attrs and attrs["path"] == "/" for _, _, attrs in cleared)


def test_the_plain_set_has_no_prefix_and_no_secure() -> None:
    cookies = SessionCookies(BrowserConfig(cookie_name="app"), ())
    headers = [*cookies.plain.session(PAIR), cookies.plain.csrf_token("t")]
    assert [attributes(h)[0] for h in headers] == ["app-access", "app-refresh", "app-csrf"]
    assert all("secure" not in attributes(h)[2] for h in headers)


def test_every_name_of_both_sets_is_stripped_upstream() -> None:
    assert cookie_names(BrowserConfig(cookie_name="gw")) == {
        "__Host-gw-access",
        "__Host-gw-refresh",
        "__Host-gw-csrf",
        "gw-access",
        "gw-refresh",
        "gw-csrf",
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"__Host-g-access=x", b""),
        (b"a=1; __Host-g-access=x; b=2", b"a=1; b=2"),
        (b"__Host-g-refresh=y;a=1", b"a=1"),
        (b"a=1;  g-csrf=z", b"a=1"),
        (b"a=1; b=2", b"a=1; b=2"),
        (b"a=1;b=\xff", b"a=1;b=\xff"),  # untouched bytes stay untouched
        (b"__Host-g-accessx=1; x__Host-g-access=2", b"__Host-g-accessx=1; x__Host-g-access=2"),
    ],
)
def test_strip_cookies(value: bytes, expected: bytes) -> None:
    names = frozenset(n.encode() for n in cookie_names(BrowserConfig(cookie_name="g")))
    assert strip_cookies(value, names) == expected


Client = TestClient[web.Request, web.Application]


async def _client(aiohttp_client: Callable[..., Any], cookies: SessionCookies) -> Client:
    async def which(request: web.Request) -> web.Response:
        presented = cookies.read(request)
        return web.json_response(
            {
                "secure": presented.cookies.secure,
                "access": presented.access,
                "refresh": presented.refresh,
                "csrf": presented.csrf,
            }
        )

    app = web.Application(handler_args={"max_field_size": 32 * 1024})  # as the gateway's
    app.router.add_get("/", which)
    result: Client = await aiohttp_client(app)
    return result


@pytest.mark.parametrize(
    ("host", "secure"),
    [
        ("127.0.0.1:8080", False),
        ("127.0.0.1", False),
        ("127.1.2.3:80", False),
        ("localhost:8080", False),
        ("LOCALHOST", False),
        ("[::1]:8080", False),
        ("app.example", True),
        ("app.example:8080", True),
        ("10.0.0.5:8080", True),
        ("localhost.evil.example", True),
    ],
)
async def test_the_plain_set_is_for_loopback_hosts_over_plain_http(
    aiohttp_client: Callable[..., Any], host: str, secure: bool
) -> None:
    client = await _client(
        aiohttp_client, SessionCookies(BrowserConfig(insecure_loopback=True), ())
    )
    response = await client.get("/", headers={"Host": host})
    assert (await response.json())["secure"] is secure


async def test_without_insecure_loopback_every_request_is_secure(
    aiohttp_client: Callable[..., Any],
) -> None:
    client = await _client(aiohttp_client, SessionCookies(BrowserConfig(), ()))
    response = await client.get("/", headers={"Host": "127.0.0.1:8080"})
    assert (await response.json())["secure"] is True


async def test_behind_a_trusted_proxy_cookies_are_secure(
    aiohttp_client: Callable[..., Any],
) -> None:
    proxies = [ipaddress.ip_network("127.0.0.1/32")]
    cookies = SessionCookies(BrowserConfig(insecure_loopback=True), proxies)
    client = await _client(aiohttp_client, cookies)
    response = await client.get("/", headers={"Host": "127.0.0.1"})
    assert (await response.json())["secure"] is True


async def test_a_request_reads_only_its_own_set(aiohttp_client: Callable[..., Any]) -> None:
    client = await _client(aiohttp_client, SessionCookies(BrowserConfig(), ()))
    cookie = (
        "gateway-access=plain; __Host-gateway-access=first; other=1; "
        "__Host-gateway-access=second; __Host-gateway-refresh=; __Host-gateway-csrf=" + "c" * 9000
    )
    response = await client.get("/", headers={"Cookie": cookie})
    # The first of duplicates counts; an empty value or one longer than any token is absent.
    assert await response.json() == {
        "secure": True,
        "access": "first",
        "refresh": None,
        "csrf": None,
    }


async def test_several_cookie_headers_are_all_read(aiohttp_client: Callable[..., Any]) -> None:
    client = await _client(aiohttp_client, SessionCookies(BrowserConfig(), ()))
    response = await client.get(
        "/", headers=[("Cookie", "__Host-gateway-access=a"), ("Cookie", "__Host-gateway-refresh=r")]
    )
    body = await response.json()
    assert (body["access"], body["refresh"]) == ("a", "r")
