"""Cookie sessions in real headless Chromium (Debian's, through Playwright): the login page, a
navigation that lands where it was going, scripts that see no token, refresh inside the
gateway after expiry (one rotation for a burst of fetches), cross-site forms refused, return
URLs that stay on the gateway, JSON 401 for fetch, and the Bearer client beside it all."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.appkeys import METRICS, STORE
from tests.support.browsers import chromium, require_chromium
from tests.support.gateways import FakeClock, Gateway, GatewayFactory, route

require_chromium()

from playwright.async_api import Browser, Page  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "login-page.png"
ROUTES = [
    route('/', 'public', methods=['GET']),
    route('/demo', 'public'),
    route('/aaa', 'public'),
    route('/bbb'),
    route('/whoami'),
    route('/private/**', strip_prefix='/private', add_prefix='/echo'),
]  # fmt: skip


class WallClock(FakeClock):
    """The gateway on real time: Chromium's cookies expire on real time too."""

    def __call__(self) -> float:
        return time.time()


@pytest.fixture
def clock() -> FakeClock:
    return WallClock()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def start(start_gateway: GatewayFactory, **config: Any) -> Gateway:
    gw: Gateway = await start_gateway(routes=ROUTES, **config, demo_user=True)
    return gw


@pytest.fixture
async def gw(start_gateway: GatewayFactory) -> Gateway:
    return await start(start_gateway)


def base(gw: Gateway) -> str:
    return str(gw.client.make_url("")).rstrip("/")


def rotations(gw: Gateway) -> float:
    return gw.app[METRICS].refreshes.labels("rotated").value


async def sign_in(page: Page, username: str = "guang", password: str = "123456") -> None:
    await page.fill("#username", username)
    await page.fill("#password", password)
    async with page.expect_navigation():
        await page.click("button[type=submit]")


async def logged_in_page(browser: Browser, gw: Gateway) -> Page:
    page = await browser.new_page()
    await page.goto(f"{base(gw)}/bbb")
    await sign_in(page)
    assert await page.inner_text("body") == "bbb"
    return page


async def test_a_navigation_lands_on_the_login_page_and_the_form_lands_on_bbb(
    browser: Browser, gw: Gateway
) -> None:
    page = await browser.new_page()
    await page.goto(f"{base(gw)}/bbb")
    assert page.url == f"{base(gw)}/_gateway/login?rd=/bbb"
    assert await page.title() == "Sign in · auth-gateway"
    assert await page.evaluate("document.activeElement.id") == "username"
    await sign_in(page)
    assert page.url == f"{base(gw)}/bbb"
    assert await page.inner_text("body") == "bbb"
    # No script can read a token: every gateway cookie is HttpOnly.
    assert await page.evaluate("document.cookie") == ""
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert set(cookies) == {
        "__Host-gateway-access",
        "__Host-gateway-refresh",
        "__Host-gateway-csrf",
    }
    for cookie in cookies.values():
        assert cookie["httpOnly"] and cookie["secure"] and cookie["path"] == "/"
        assert cookie["domain"] == "127.0.0.1"  # host-only
    assert cookies["__Host-gateway-access"]["sameSite"] == "Lax"
    assert cookies["__Host-gateway-csrf"]["sameSite"] == "Strict"
    whoami = await page.evaluate("fetch('/whoami').then(r => r.json())")
    assert whoami["username"] == "guang"


async def test_a_wrong_password_is_announced_and_the_form_works_without_javascript(
    browser: Browser, gw: Gateway
) -> None:
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    await page.goto(f"{base(gw)}/bbb")
    await sign_in(page, password="wrong")
    alert = page.get_by_role("alert")
    assert await alert.inner_text() == "Invalid username or password"
    assert await page.input_value("#username") == "guang"
    assert await page.input_value("#password") == ""
    await sign_in(page)
    assert await page.inner_text("body") == "bbb"
    await context.close()


async def test_after_expiry_navigation_and_twenty_fetches_refresh_once(
    browser: Browser, start_gateway: GatewayFactory
) -> None:
    gw = await start(start_gateway, tokens={"access_ttl": "3s"})
    page = await logged_in_page(browser, gw)
    await asyncio.sleep(3.5)  # the browser drops the expired access cookie by itself
    await page.goto(f"{base(gw)}/bbb")
    assert await page.inner_text("body") == "bbb"
    assert rotations(gw) == 1
    await asyncio.sleep(3.5)
    answers = await page.evaluate(
        """Promise.all(Array.from({length: 20}, () =>
             fetch('/bbb').then(async r => [r.status, r.redirected, await r.text()])))"""
    )
    assert answers == [[200, False, "bbb"]] * 20
    assert rotations(gw) == 2  # one for the whole burst
    assert gw.app[METRICS].refreshes.labels("reuse_detected").value == 0
    again = await page.evaluate("fetch('/whoami').then(r => r.status)")
    assert again == 200
    assert [s.revoked_at for s in await gw.app[STORE].list_sessions(1)] == [None]


async def test_fetch_without_a_session_gets_json_401_never_a_redirect(
    browser: Browser, gw: Gateway
) -> None:
    page = await browser.new_page()
    await page.goto(f"{base(gw)}/aaa")
    script = """async (init) => {
        const r = await fetch('/bbb', init);
        return [r.status, r.redirected, r.headers.get('content-type'), (await r.json()).message];
    }"""
    expected = [401, False, "application/json; charset=utf-8", "Missing bearer token"]
    assert await page.evaluate(script, {}) == expected
    xhr = await page.evaluate(
        """new Promise(done => { const x = new XMLHttpRequest(); x.open('GET', '/bbb');
             x.setRequestHeader('Accept', 'text/html'); x.onload = () => done([x.status,
             x.responseURL.endsWith('/bbb')]); x.send(); })"""
    )
    assert xhr == [401, True]
    # Logged in, a fetch that leaves the cookies behind is an API call without a session.
    await page.goto(f"{base(gw)}/bbb")
    await sign_in(page)
    assert await page.evaluate(script, {"credentials": "omit"}) == expected


async def test_a_login_returning_to_another_host_ends_on_the_gateway(
    browser: Browser, gw: Gateway
) -> None:
    page = await browser.new_page()
    for rd in ("https://evil.example/", "//evil.example/", "/\\evil.example/"):
        await page.context.clear_cookies()
        await page.goto(f"{base(gw)}/_gateway/login?rd={rd}")
        await sign_in(page)
        assert page.url.startswith(base(gw) + "/"), (rd, page.url)


@pytest.fixture
async def other_site(aiohttp_server: Callable[..., Any]) -> Callable[[str], str]:
    """Another origin (another port: same site, cross-origin) serving forms aimed at a
    gateway; returns the page's URL for a gateway base URL."""

    async def forms(request: web.Request) -> web.Response:
        target = request.query["target"]
        return web.Response(
            content_type="text/html",
            text=f"""<!doctype html><title>elsewhere</title>
            <form id="logout" method="post" action="{target}/user/logout">
              <input type="hidden" name="x" value="1"><button>Log out</button></form>
            <form id="write" method="post" action="{target}/private/x">
              <input type="hidden" name="amount" value="100"><button>Send</button></form>""",
        )

    app = web.Application()
    app.router.add_get("/", forms)
    server = await aiohttp_server(app)
    return lambda target: f"http://127.0.0.1:{server.port}/?target={target}"


@pytest.mark.parametrize("gateway_host", ["127.0.0.1", "localhost"])
async def test_forms_on_another_origin_cannot_log_out_or_post(
    browser: Browser, gw: Gateway, other_site: Callable[[str], str], gateway_host: str
) -> None:
    """127.0.0.1 on another port is the same site (Lax cookies go along: the Origin rule
    refuses); localhost is another site (the browser sends no session at all)."""
    page = await logged_in_page(browser, gw)
    target = base(gw).replace("127.0.0.1", gateway_host)
    if gateway_host == "localhost":  # log in on that host name too: cookies are per host
        await page.goto(f"{target}/bbb")
        await sign_in(page)
    # Same site: the cookies come along and the Origin rule refuses both. Cross-site: no
    # cookies come along; logout still checks the Origin, the write has no session.
    expected = {"logout": 403, "write": 403 if gateway_host == "127.0.0.1" else 401}
    for form, status in expected.items():
        await page.goto(other_site(target))
        async with page.expect_navigation():
            await page.click(f"#{form} button")
        body = await page.inner_text("body")
        assert f'"statusCode": {status}' in body, (form, body)
        assert "body_sha256" not in body  # the upstream's echo never answered
    await page.goto(f"{target}/bbb")
    assert await page.inner_text("body") == "bbb"  # still logged in
    assert [s.revoked_at for s in await gw.app[STORE].list_sessions(1)] == [None] * (
        2 if gateway_host == "localhost" else 1
    )


async def test_logout_from_the_gateways_own_page(browser: Browser, gw: Gateway) -> None:
    page = await logged_in_page(browser, gw)
    await page.goto(f"{base(gw)}/user/logout")
    assert await page.get_by_role("heading").inner_text() == "Log out of auth-gateway?"
    async with page.expect_navigation():
        await page.click("button[type=submit]")
    assert page.url == f"{base(gw)}/_gateway/login?logged_out=1"
    assert await page.get_by_role("status").inner_text() == "You have been logged out."
    names = {c["name"] for c in await page.context.cookies()}
    assert names == {"__Host-gateway-csrf"}
    await page.goto(f"{base(gw)}/bbb")
    assert "/_gateway/login" in page.url
    assert [s.revoked_at is not None for s in await gw.app[STORE].list_sessions(1)] == [True]


async def test_the_classic_bearer_client_works_beside_a_cookie_session(
    browser: Browser, gw: Gateway
) -> None:
    page = await logged_in_page(browser, gw)
    await page.goto(f"{base(gw)}/demo")
    await page.wait_for_selector("body[data-ready=true]", state="attached")
    await page.click("#login")
    await page.wait_for_function(
        "document.querySelector('#who').textContent.startsWith('logged in as')"
    )
    await page.click("#get-bbb")
    await page.wait_for_function("document.querySelectorAll('#results li').length >= 1")
    await page.click("#spoil-access")
    await page.click("#three-bbb")
    await page.wait_for_function("document.querySelectorAll('#results li').length >= 4")
    lines = await page.locator("#results li .text").all_inner_texts()
    assert lines == ["/bbb → 200 bbb"] * 4
    # The spoiled Bearer token was refused despite the live cookies; the client refreshed.
    assert gw.app[METRICS].refreshes.labels("rotated").value == 1
    assert "refreshed the tokens" in await page.locator("#log").inner_text()


async def test_the_demo_page_in_cookie_session_mode(browser: Browser, gw: Gateway) -> None:
    page = await browser.new_page()
    await page.goto(f"{base(gw)}/demo")
    await page.wait_for_selector("body[data-ready=true]", state="attached")
    async with page.expect_navigation():
        await page.check("#mode-cookie")
    await page.wait_for_selector("body[data-ready=true]", state="attached")
    assert await page.is_disabled("#spoil-access") and not await page.is_visible("#username")
    assert await page.locator("#steps-cookie").is_visible()
    assert await page.locator("#who").inner_text() == "not logged in"
    async with page.expect_navigation():
        await page.click("#login")
    assert "/_gateway/login?rd=" in page.url
    await sign_in(page)
    await page.wait_for_selector("body[data-ready=true]", state="attached")
    assert page.url == f"{base(gw)}/demo?mode=cookie"
    assert await page.locator("#who").inner_text() == "logged in as guang"
    await page.click("#get-bbb")
    await page.wait_for_function("document.querySelectorAll('#results li').length >= 1")
    await page.click("#show-cookies")
    log = await page.locator("#log").inner_text()
    assert 'document.cookie = "" (nothing a script can read)' in log
    await page.click("#logout")
    await page.locator("#status").wait_for(state="visible")
    assert (await page.locator("#status").inner_text()).startswith("Logged out: the gateway")
    assert await page.locator("#who").inner_text() == "not logged in"
    await page.click("#get-bbb")
    await page.wait_for_function("document.querySelectorAll('#results li').length >= 2")
    assert await page.locator("#results li .text").all_inner_texts() == [
        "/bbb → 200 bbb",
        "/bbb → 401 Unauthorized: Missing bearer token",
    ]


async def test_plain_http_loopback_cookies_for_the_demo(
    browser: Browser, start_gateway: GatewayFactory
) -> None:
    gw = await start(start_gateway, browser={"insecure_loopback": True})
    page = await logged_in_page(browser, gw)
    cookies = {c["name"]: c["secure"] for c in await page.context.cookies()}
    assert cookies == {"gateway-access": False, "gateway-refresh": False, "gateway-csrf": False}


LOGO = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64" width="56" height="56">
<rect width="64" height="64" rx="14" fill="#1f5fbf"/><circle cx="24" cy="32" r="10" fill="none"
stroke="#fff" stroke-width="6"/><path d="M34 32h22M48 32v10" stroke="#fff" stroke-width="6"
stroke-linecap="round"/></svg>"""


async def test_the_login_page_screenshot(
    browser: Browser, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """Renders the page as a user sees it, with a title and a logo from config;
    UPDATE_SCREENSHOTS=1 writes docs/login-page.png."""
    (tmp_path / "logo.svg").write_text(LOGO)
    gw = await start(
        start_gateway, browser={"title": "Admin console", "logo": str(tmp_path / "logo.svg")}
    )
    context = await browser.new_context(viewport={"width": 900, "height": 640})
    page = await context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    await page.goto(f"{base(gw)}/bbb")
    assert await page.locator("img.logo").evaluate("img => img.naturalWidth") > 0
    target = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path / "login.png"
    target.parent.mkdir(exist_ok=True)
    await page.screenshot(path=str(target))
    assert target.stat().st_size > 5000
    await sign_in(page, password="not-the-password")
    assert await page.get_by_role("alert").is_visible()
    # Only the page itself was fetched: no asset, no favicon, nothing its policy blocked.
    assert all("/_gateway/login" in url or "/bbb" in url for url in requested), requested
    await context.close()
