"""Cookie sessions through nginx's auth_request, in real headless Chromium: a navigation to a
protected page is sent to the gateway's login page (the decision's 401 with Location, turned
into a redirect by `error_page 401 = @gateway_login`) and comes back logged in; after the access
cookie expires, the decision refreshes the session and nginx hands the new cookies on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.appkeys import METRICS
from tests.support import ingresses
from tests.support.browsers import chromium, require_chromium
from tests.support.gateways import route

require_chromium()

from playwright.async_api import Browser  # noqa: E402

ROUTES: list[dict[str, Any]] = [
    route("/bbb", methods=["GET"]),
    route("/whoami"),
    route("/echo/**"),
]
ACCESS_TTL = 2.0


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def test_a_navigation_through_nginx_logs_in_and_refreshes(
    browser: Browser, tmp_path: Path, aiohttp_server: Callable[..., Any]
) -> None:
    behind = await ingresses.gateway_and_upstream(
        aiohttp_server,
        f"sqlite:///{tmp_path / 'gateway.db'}",
        ROUTES,
        tokens={"access_ttl": f"{ACCESS_TTL}s", "leeway": "0s"},
    )
    rotated = behind.gateway[METRICS].refreshes.labels("rotated")
    with ingresses.nginx(
        tmp_path / "nginx", gateway=behind.gateway_address, app=behind.app_address
    ) as url:
        page = await browser.new_page()
        await page.goto(f"{url}/bbb?from=test")
        assert page.url == f"{url}/_gateway/login?rd=%2Fbbb%3Ffrom%3Dtest"
        assert behind.seen == []  # the upstream never saw the anonymous navigation
        await page.fill("#username", "guang")
        await page.fill("#password", "123456")
        async with page.expect_navigation():
            await page.click("button[type=submit]")
        assert page.url == f"{url}/bbb?from=test"
        assert await page.inner_text("body") == "bbb"
        whoami = await page.evaluate("fetch('/whoami').then(r => r.json())")
        assert whoami["username"] == "guang"
        # The app gets the page's own cookie, never the gateway's (nginx's maps take them out).
        await page.evaluate("document.cookie = 'theme=dark; path=/'")
        echo = await page.evaluate("fetch('/echo/x').then(r => r.json())")
        cookies = [value for name, value in echo["headers"] if name.lower() == "cookie"]
        assert cookies == ["theme=dark"]

        await asyncio.sleep(ACCESS_TTL + 1.0)  # the access cookie is gone from the browser
        before = rotated.value
        await page.goto(f"{url}/whoami")
        assert (await page.evaluate("JSON.parse(document.body.innerText)"))["username"] == "guang"
        assert rotated.value == before + 1  # refreshed inside the decision
        # nginx handed the new cookies on: the next navigation needs no refresh.
        await page.goto(f"{url}/bbb")
        assert await page.inner_text("body") == "bbb"
        assert rotated.value == before + 1
        names = {cookie["name"] for cookie in await page.context.cookies()}
        assert {"__Host-gateway-access", "__Host-gateway-refresh"} <= names
