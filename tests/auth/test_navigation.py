"""Navigation detection, on real requests: only a top-level page load is a navigation.

The header sets are what the clients send (Chromium's and Firefox's Fetch Metadata, Safari
before 16.4 without it, jQuery, curl, Python clients)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.auth.navigation import accepts_html, is_navigation, wants_login_redirect

CHROME_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"
HTML_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
NAVIGATE = {
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-Site": "none",
    "Sec-Fetch-User": "?1",
    "Accept": HTML_ACCEPT,
    "User-Agent": CHROME_UA,
}


@pytest.fixture
async def client(aiohttp_client: Callable[..., Any]) -> TestClient[web.Request, web.Application]:
    async def verdict(request: web.Request) -> web.Response:
        return web.json_response([is_navigation(request), wants_login_redirect(request)])

    app = web.Application()
    app.router.add_route("*", "/page", verdict)
    result: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    return result


CASES = [
    ("top-level navigation", "GET", NAVIGATE, [True, True]),
    ("reload (HEAD)", "HEAD", NAVIGATE, None),
    ("link from another site", "GET", {**NAVIGATE, "Sec-Fetch-Site": "cross-site"}, [True, True]),
    ("form POST navigation", "POST", {**NAVIGATE, "Sec-Fetch-Site": "same-origin"}, [True, False]),
    ("iframe", "GET", {**NAVIGATE, "Sec-Fetch-Dest": "iframe"}, [False, False]),
    ("fetch()", "GET", {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}, [False, False]),
    (
        "fetch() asking for HTML",
        "GET",
        {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty", "Accept": "text/html"},
        [False, False],
    ),
    (
        "no-cors image",
        "GET",
        {"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"},
        [False, False],
    ),
    ("script", "GET", {"Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "script"}, [False, False]),
    (
        "websocket",
        "GET",
        {"Sec-Fetch-Mode": "websocket", "Sec-Fetch-Dest": "websocket"},
        [False, False],
    ),
    (
        "old Safari navigation (no Fetch Metadata)",
        "GET",
        {"Accept": HTML_ACCEPT, "User-Agent": "Mozilla/5.0 (Macintosh) Safari/605.1.15"},
        [True, True],
    ),
    (
        "old browser XHR (jQuery)",
        "GET",
        {
            "Accept": "text/html, */*; q=0.01",
            "X-Requested-With": "XMLHttpRequest",
            "User-Agent": "Mozilla/5.0 Safari/605.1.15",
        },
        [False, False],
    ),
    (
        "old browser fetch()",
        "GET",
        {"Accept": "*/*", "User-Agent": "Mozilla/5.0 Safari/605.1.15"},
        [False, False],
    ),
    (
        "old browser refusing HTML",
        "GET",
        {"Accept": "text/html;q=0, application/json", "User-Agent": "Mozilla/5.0"},
        [False, False],
    ),
    (
        "old browser form POST",
        "POST",
        {"Accept": HTML_ACCEPT, "User-Agent": "Mozilla/5.0 Safari/605.1.15"},
        [False, False],
    ),
    ("curl", "GET", {"Accept": "*/*", "User-Agent": "curl/8.5.0"}, [False, False]),
    (
        "curl asking for HTML",
        "GET",
        {"Accept": "text/html", "User-Agent": "curl/8.5.0"},
        [False, False],
    ),
    ("python client", "GET", {}, [False, False]),
]


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [pytest.param(m, h, e, id=name) for name, m, h, e in CASES],
)
async def test_what_counts_as_a_navigation(
    client: TestClient[web.Request, web.Application],
    method: str,
    headers: dict[str, str],
    expected: list[bool] | None,
) -> None:
    response = await client.request(
        method, "/page", headers=headers, skip_auto_headers=["User-Agent"]
    )
    assert response.status == 200
    if expected is not None:
        assert await response.json() == expected


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("text/html", True),
        ("TEXT/HTML", True),
        ("application/xhtml+xml", True),
        ("text/html;q=0.5", True),
        ("text/html; q=0", False),
        ("text/html;q=0.0", False),
        ("text/html;q=x", False),
        ("*/*", False),
        ("text/*", False),
        ("application/json, text/plain", False),
        ("", False),
        ("text/htmlx", False),
    ],
)
def test_accept_names_html(accept: str, expected: bool) -> None:
    assert accepts_html(accept) is expected
