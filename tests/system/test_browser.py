"""Real headless Chromium (Debian's, driven by Playwright with its executable path set):
the demo page's silent refresh, login-required, two tabs, and the classic axios client on
another origin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.appkeys import METRICS, STORE
from tests.support.browsers import chromium, require_chromium
from tests.support.gateways import Gateway, GatewayFactory, route
from tests.support.services import IN_CI

AXIOS = Path(__file__).parent / "browser" / "node_modules" / "axios" / "dist" / "axios.min.js"
CLASSIC_PAGE = Path(__file__).parent / "browser" / "classic.html"

require_chromium()
if not AXIOS.exists():
    if IN_CI:
        raise RuntimeError(f"CI needs {AXIOS} (make test installs it with npm)")
    pytest.skip("needs `npm ci --prefix tests/system/browser`", allow_module_level=True)

from playwright.async_api import Browser, Page  # noqa: E402


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


def refreshes(gw: Gateway, outcome: str = "rotated") -> float:
    return gw.app[METRICS].refreshes.labels(outcome).value


@pytest.fixture
async def demo(start_gateway: GatewayFactory) -> Gateway:
    gw: Gateway = await start_gateway(
        routes=[route("/demo", "public"), route("/aaa", "public"), route("/bbb")], demo_user=True
    )
    return gw


async def open_demo(page: Page, gw: Gateway) -> None:
    await page.goto(str(gw.client.make_url("/demo")))
    await page.wait_for_selector("body[data-ready=true]", state="attached")


@pytest.fixture
async def page(browser: Browser, demo: Gateway) -> Page:
    """A browser tab on the demo page, logged in as guang."""
    tab = await browser.new_page()
    await open_demo(tab, demo)
    await log_in(tab)
    return tab


async def results(page: Page, count: int) -> list[str]:
    """The result lines without their timestamps."""
    await page.wait_for_function(
        f"document.querySelectorAll('#results li').length >= {count}", timeout=15000
    )
    return await page.locator("#results li .text").all_inner_texts()


async def log_lines(page: Page) -> list[str]:
    return await page.locator("#log div .text").all_inner_texts()


async def log_in(page: Page) -> None:
    await page.click("#login")
    await page.wait_for_function(
        "document.querySelector('#who').textContent.startsWith('logged in as')"
    )


async def test_demo_page_refreshes_once_for_three_requests(page: Page, demo: Gateway) -> None:
    await page.click("#get-aaa")
    await page.click("#get-bbb")
    assert await results(page, 2) == ["/aaa → 200 aaa", "/bbb → 200 bbb"]
    await page.click("#spoil-access")
    await page.click("#three-bbb")
    lines = await results(page, 5)
    assert lines[2:] == ["/bbb → 200 bbb"] * 3
    assert refreshes(demo) == 1  # counted at the gateway
    log = await log_lines(page)
    assert log.count("refreshed the tokens") == 1
    assert log.count("replay /bbb") == 3
    # The 401s that started the refresh are in the log, before the one refresh request.
    refused = [i for i, line in enumerate(log) if line == "← 401 GET /bbb: access token refused"]
    assert len(refused) == 3, log
    refreshing = log.index("refreshing: POST /user/refresh")
    assert refused[0] < refreshing < log.index("refreshed the tokens")
    assert log.count("refreshing: POST /user/refresh") == 1
    assert await page.locator("#who").inner_text() == "logged in as guang"


async def test_expired_session_says_login_required_once(page: Page, demo: Gateway) -> None:
    await page.click("#spoil-both")
    await page.click("#three-bbb")
    lines = await results(page, 3)
    # Every waiter is rejected as "login required" (the first with the gateway's reason).
    assert all(line.startswith("/bbb → LoginRequiredError: ") for line in lines), lines
    assert "/bbb → LoginRequiredError: Invalid refresh token" in lines
    assert await page.locator("#login-required").get_attribute("data-count") == "1"
    assert await page.locator("#login-required").is_visible()
    assert await page.locator("#who").inner_text() == "not logged in"
    # Nothing hangs or loops: a little later, nothing more has been sent.
    sent = (await page.locator("#log").inner_text()).count("send ")
    await asyncio.sleep(1.0)
    assert (await page.locator("#log").inner_text()).count("send ") == sent
    assert await page.evaluate("window.gatewayClient.tokens") is None


async def test_logout_shows_its_result_and_clears_the_user(page: Page, demo: Gateway) -> None:
    await page.click("#logout")
    status = page.locator("#status")
    await status.wait_for(state="visible")
    assert (await status.inner_text()).startswith("Logged out: the gateway ended the session")
    assert "{" not in await status.inner_text()  # words, not the raw JSON body
    assert await page.locator("#who").inner_text() == "not logged in"
    sessions = await demo.app[STORE].list_sessions(1)
    assert [s.revoked_at is not None for s in sessions] == [True]
    await page.click("#get-bbb")
    assert await results(page, 1) == ["/bbb → 401 Unauthorized: Missing bearer token"]
    assert (await status.inner_text()).startswith("Not logged in: /bbb needs a token")


async def test_demo_page_is_self_contained_and_labelled(browser: Browser, demo: Gateway) -> None:
    page = await browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    await open_demo(page, demo)
    await log_in(page)
    await page.click("#get-aaa")
    await results(page, 1)
    origin = str(demo.client.make_url("/")).rstrip("/")
    assert all(url.startswith((origin, "data:")) for url in requested), requested
    assert not any(url.endswith("/favicon.ico") for url in requested)  # the icon is inline
    assert await page.locator("link[rel=icon][href^='data:']").count() == 1
    assert await page.locator("meta[name=viewport]").count() == 1
    for field in ("username", "password"):
        assert await page.locator(f"label[for={field}]").count() == 1
    assert await page.locator("ol.steps li").count() >= 4  # what to try, in order
    # Each log line and result carries its time; the clear button empties both.
    assert await page.locator("#log div time").count() == len(await log_lines(page))
    assert await page.locator("#results li time").count() == 1
    await page.click("#clear")
    assert await page.locator("#log div").count() == 0
    assert await page.locator("#results li").count() == 0


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


@pytest.fixture
async def classic(
    browser: Browser, start_gateway: GatewayFactory, classic_origin: str
) -> tuple[Gateway, Page]:
    """The classic page on its own origin, logged in to a gateway that allows that origin."""
    gw: Gateway = await start_gateway(cors={"allowed_origins": [classic_origin]}, demo_user=True)
    api = str(gw.client.make_url("")).rstrip("/").replace("localhost", "127.0.0.1")
    page = await browser.new_page()
    await page.goto(f"{classic_origin}/?api={api}")
    await page.wait_for_selector("body[data-ready=true]", state="attached")
    assert await page.evaluate("classic.login('guang', '123456')") == 200
    return gw, page


def refresh_attempts(gw: Gateway) -> float:
    """Refreshes the gateway answered, whatever the outcome."""
    return sum(
        sample.value
        for sample in gw.app[METRICS].refreshes.collect().samples
        if sample.name.endswith("_total")
    )


async def test_classic_axios_client_on_another_origin(classic: tuple[Gateway, Page]) -> None:
    gw, page = classic
    assert await page.evaluate("classic.get('/bbb')") == [200, "bbb"]
    await page.evaluate("classic.spoil()")
    # The stale token rides along on the refresh too (the interceptor adds it everywhere).
    assert await page.evaluate("classic.get('/bbb')") == [200, "bbb"]
    assert refreshes(gw) == 1
    await page.evaluate("classic.spoil()")
    assert await page.evaluate("classic.login('guang', '123456')") == 200  # stale token ignored


async def test_classic_client_queues_concurrent_failures_behind_one_refresh(
    classic: tuple[Gateway, Page],
) -> None:
    gw, page = classic
    await page.evaluate("classic.spoil()")
    assert await page.evaluate("classic.getMany('/bbb', 3)") == [[200, "bbb"]] * 3
    assert refreshes(gw) == 1  # the `refreshing` flag held the other two in the queue
    assert await page.evaluate("classic.queued") == 2
    sent: list[str] = await page.evaluate("classic.sent")
    assert sent.count("GET /user/refresh") == 1
    # Its queue is never emptied: the next refresh replays the earlier round's requests again.
    before = len(sent)
    await page.evaluate("classic.spoil()")
    assert await page.evaluate("classic.get('/bbb')") == [200, "bbb"]
    assert refreshes(gw) == 2
    later: list[str] = (await page.evaluate("classic.sent"))[before:]
    # The request, the refresh, two stale replays from the first round, and its own replay.
    assert later.count("GET /bbb") == 1 + 2 + 1, later


async def test_classic_client_hangs_on_a_refused_refresh_where_install_axios_settles(
    classic: tuple[Gateway, Page],
) -> None:
    gw, page = classic
    await page.evaluate("classic.spoilBoth()")
    # The refresh's own 401 arrives while `refreshing` is set and is queued behind itself.
    assert await page.evaluate("classic.settles('/bbb', 3000)") == "pending"
    assert refresh_attempts(gw) == 1 and refreshes(gw) == 0  # the gateway did refuse it
    assert await page.evaluate("classic.queued") == 1
    assert "login expired" not in await page.locator("#out").inner_text()  # never said

    # The same app on /_gateway/client.js's installAxios: settles with "login required".
    assert await page.evaluate("fixed.login('guang', '123456')") == 200
    await page.evaluate("fixed.spoilBoth()")
    assert await page.evaluate("fixed.settles('/bbb', 3000)") == "rejected: LoginRequiredError"
    assert await page.evaluate("fixed.loginRequired") == 1
    assert await page.evaluate("fixed.tokens") is None
    assert refresh_attempts(gw) == 2
