"""Real headless Chromium (Debian's, driven by Playwright with its executable path set):
the demo page's silent refresh, login-required, two tabs, and the classic axios client on
another origin."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.appkeys import METRICS, STORE
from tests.support.gateways import Gateway, GatewayFactory
from tests.support.services import IN_CI

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AXIOS = Path(__file__).parent / "browser" / "node_modules" / "axios" / "dist" / "axios.min.js"
CLASSIC_PAGE = Path(__file__).parent / "browser" / "classic.html"
# As the machine's notes advise: no background networking in a closed network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not (os.path.exists(CHROMIUM) and AXIOS.exists()):
    if IN_CI:
        raise RuntimeError(f"CI needs {CHROMIUM} and {AXIOS} (.ci/run installs them)")
    pytest.skip(
        "needs Debian's chromium (apt-get install chromium) and "
        "`npm ci --prefix tests/system/browser`",
        allow_module_level=True,
    )

from playwright.async_api import Browser, Page, async_playwright  # noqa: E402


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


def refreshes(gw: Gateway, outcome: str = "rotated") -> float:
    return gw.app[METRICS].refreshes.labels(outcome).value


@pytest.fixture
async def demo(start_gateway: GatewayFactory) -> Gateway:
    gw: Gateway = await start_gateway(
        routes=[
            {"path": "/demo", "upstream": "demo", "auth": "public"},
            {"path": "/aaa", "upstream": "demo", "auth": "public"},
            {"path": "/bbb", "upstream": "demo", "auth": "required"},
        ]
    )
    await gw.add_user()
    return gw


async def open_demo(page: Page, gw: Gateway) -> None:
    await page.goto(str(gw.client.make_url("/demo")))
    await page.wait_for_selector("body[data-ready=true]", state="attached")


async def results(page: Page, count: int) -> list[str]:
    await page.wait_for_function(
        f"document.querySelectorAll('#results div').length >= {count}", timeout=15000
    )
    return await page.locator("#results div").all_inner_texts()


async def log_in(page: Page) -> None:
    await page.click("#login")
    await page.wait_for_function("document.querySelector('#who').textContent.length > 0")


async def test_demo_page_refreshes_once_for_three_requests(browser: Browser, demo: Gateway) -> None:
    page = await browser.new_page()
    await open_demo(page, demo)
    await log_in(page)
    await page.click("#get-aaa")
    await page.click("#get-bbb")
    assert await results(page, 2) == ["/aaa → 200 aaa", "/bbb → 200 bbb"]
    await page.click("#spoil-access")
    await page.click("#three-bbb")
    lines = await results(page, 5)
    assert lines[2:] == ["/bbb → 200 bbb"] * 3
    assert refreshes(demo) == 1  # counted at the gateway
    log = await page.locator("#log").inner_text()
    assert log.count("refreshed the tokens") == 1
    assert log.count("replay /bbb") == 3


async def test_expired_session_says_login_required_once(browser: Browser, demo: Gateway) -> None:
    page = await browser.new_page()
    await open_demo(page, demo)
    await log_in(page)
    await page.click("#spoil-both")
    await page.click("#three-bbb")
    lines = await results(page, 3)
    # Every waiter is rejected as "login required" (the first with the gateway's reason).
    assert all(line.startswith("/bbb → LoginRequiredError: ") for line in lines), lines
    assert "/bbb → LoginRequiredError: Invalid refresh token" in lines
    assert await page.locator("#login-required").get_attribute("data-count") == "1"
    assert await page.locator("#login-required").is_visible()
    # Nothing hangs or loops: a little later, nothing more has been sent.
    sent = (await page.locator("#log").inner_text()).count("send ")
    await asyncio.sleep(1.0)
    assert (await page.locator("#log").inner_text()).count("send ") == sent
    assert await page.evaluate("window.gatewayClient.tokens") is None


async def test_two_tabs_refreshing_at_once_keep_the_session(
    browser: Browser, demo: Gateway
) -> None:
    context = await browser.new_context()
    first, second = await context.new_page(), await context.new_page()
    await open_demo(first, demo)
    await open_demo(second, demo)
    await log_in(first)  # both tabs share the tokens in localStorage
    await first.click("#spoil-access")
    await asyncio.gather(first.click("#three-bbb"), second.click("#three-bbb"))
    assert await results(first, 3) == ["/bbb → 200 bbb"] * 3
    assert await results(second, 3) == ["/bbb → 200 bbb"] * 3
    assert refreshes(demo) == 1  # Web Locks: one tab refreshed, the other used its tokens
    assert refreshes(demo, "reuse_detected") == 0
    sessions = await demo.app[STORE].list_sessions(1)
    assert [s.revoked_at for s in sessions] == [None]
    await context.close()


@pytest.fixture
async def classic_origin(aiohttp_server: Callable[..., Any]) -> str:
    """Another origin serving the classic page and axios from its npm package."""

    async def page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(CLASSIC_PAGE)

    async def axios(request: web.Request) -> web.FileResponse:
        return web.FileResponse(AXIOS)

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/axios.min.js", axios)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}"


async def test_classic_axios_client_on_another_origin(
    browser: Browser, start_gateway: GatewayFactory, classic_origin: str
) -> None:
    gw: Gateway = await start_gateway(cors={"allowed_origins": [classic_origin]})
    await gw.add_user()
    api = str(gw.client.make_url("")).rstrip("/").replace("localhost", "127.0.0.1")
    page = await browser.new_page()
    await page.goto(f"{classic_origin}/?api={api}")
    await page.wait_for_selector("body[data-ready=true]", state="attached")
    assert await page.evaluate("classic.login('guang', '123456')") == 200
    assert await page.evaluate("classic.get('/bbb')") == [200, "bbb"]
    await page.evaluate("classic.spoil()")
    # The stale token rides along on the refresh too (the interceptor adds it everywhere).
    assert await page.evaluate("classic.get('/bbb')") == [200, "bbb"]
    assert refreshes(gw) == 1
    await page.evaluate("classic.spoil()")
    assert await page.evaluate("classic.login('guang', '123456')") == 200  # stale token ignored
