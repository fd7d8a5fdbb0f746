"""The login page: the form, its security headers, login CSRF, the same limits as the JSON
login, one generic error, safe return URLs, and every bad request a clear JSON error."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from gateway.appkeys import METRICS, STORE
from tests.support.cookies import NAVIGATE, Jar, log_in_by_form, origin_of, set_cookies
from tests.support.errors import error_body
from tests.support.gateways import Gateway, GatewayFactory

from ..config.test_browser_section import PIXEL

CSRF = "__Host-gateway-csrf"


@pytest.fixture
async def gw(start_gateway: GatewayFactory) -> Gateway:
    gateway: Gateway = await start_gateway(
        rate_limits={"per_user_and_address": 3, "per_user": 0, "per_address": 0}, demo_user=True
    )
    return gateway


async def form(gw: Gateway, jar: Jar, rd: str = "/bbb") -> str:
    """GET the page into `jar`; its CSRF field."""
    page = await gw.client.get("/_gateway/login", params={"rd": rd}, headers=jar.headers(NAVIGATE))
    jar.update(page)
    found = re.search(r'name="csrf" value="([^"]+)"', await page.text())
    assert found is not None
    return found.group(1)


def same_origin(gw: Gateway) -> dict[str, str]:
    return {**NAVIGATE, "Origin": origin_of(gw.client), "Sec-Fetch-Site": "same-origin"}


async def post(gw: Gateway, jar: Jar, **fields: str) -> tuple[int, str, dict[str, str]]:
    response = await gw.client.post(
        "/_gateway/login", data=fields, headers=jar.headers(same_origin(gw)), allow_redirects=False
    )
    jar.update(response)
    return response.status, await response.text(), dict(response.headers)


def alerts(html: str) -> list[str]:
    return re.findall(r'<p id="login-error" class="error" role="alert">([^<]*)</p>', html)


async def test_the_page_is_plain_html_with_a_strict_policy(gw: Gateway) -> None:
    page = await gw.client.get("/_gateway/login?rd=/bbb", headers=NAVIGATE)
    assert page.status == 200 and page.content_type == "text/html" and page.charset == "utf-8"
    policy = page.headers["Content-Security-Policy"]
    assert re.fullmatch(
        r"default-src 'none'; style-src 'sha256-[A-Za-z0-9+/=]{44}'; img-src data:; "
        r"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        policy,
    )
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert page.headers["Cache-Control"] == "no-store"
    html = await page.text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert "style=" not in html  # inline style attributes would need 'unsafe-inline'
    assert '<label for="username">' in html and '<label for="password">' in html
    assert 'autocomplete="username"' in html and 'autocomplete="current-password"' in html
    assert html.count("autofocus") == 1
    assert '<html lang="en">' in html and '<meta name="viewport"' in html
    assert '<input type="hidden" name="rd" value="/bbb">' in html
    csrf_cookie = set_cookies(page)[CSRF]
    assert f'name="csrf" value="{csrf_cookie.value}"' in html
    assert alerts(html) == []


async def test_the_page_shows_the_configured_title_and_logo(
    start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    (tmp_path / "logo.png").write_bytes(PIXEL)
    gw: Gateway = await start_gateway(
        browser={"title": "Grafana <prod>", "logo": str(tmp_path / "logo.png")}
    )
    html = await (await gw.client.get("/_gateway/login", headers=NAVIGATE)).text()
    assert "<h1>Sign in to Grafana &lt;prod&gt;</h1>" in html
    assert '<img class="logo" src="data:image/png;base64,' in html
    assert "Protected by auth-gateway" in html


async def test_the_form_token_is_kept_for_a_second_tab(gw: Gateway) -> None:
    jar = Jar()
    first = await form(gw, jar)
    second = await form(gw, jar)
    assert first == second  # the first tab's form stays valid


async def test_the_return_url_is_made_safe(gw: Gateway) -> None:
    for rd in ("//evil.example", "https://evil.example/", "/\\evil.example", "javascript:x"):
        html = await (
            await gw.client.get("/_gateway/login", params={"rd": rd}, headers=NAVIGATE)
        ).text()
        assert '<input type="hidden" name="rd" value="/">' in html, rd
    jar = Jar()
    response = await log_in_by_form(gw.client, jar, return_to="https://evil.example/x")
    assert (response.status, response.headers["Location"]) == (303, "/")


async def test_a_return_to_a_trusted_origin_is_kept(start_gateway: GatewayFactory) -> None:
    gw: Gateway = await start_gateway(
        browser={"trusted_origins": ["https://admin.example"]}, demo_user=True
    )
    page = await gw.client.get("/_gateway/login", headers=NAVIGATE)
    assert "form-action 'self' https://admin.example;" in page.headers["Content-Security-Policy"]
    response = await log_in_by_form(gw.client, Jar(), return_to="https://admin.example/board")
    assert response.headers["Location"] == "https://admin.example/board"


async def test_wrong_credentials_show_the_page_again_with_one_generic_error(
    gw: Gateway,
) -> None:
    for username in ("guang", "nobody"):
        jar = Jar()
        status, html, headers = await post(
            gw, jar, username=username, password="wrong", csrf=await form(gw, jar), rd="/bbb"
        )
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Bearer realm="gateway"'
        assert alerts(html) == ["Invalid username or password"]
        assert f'name="username" value="{username}"' in html
        assert "wrong" not in html  # the password is never sent back
        assert 'aria-describedby="login-error"' in html
        assert re.search(r'id="password"[^>]*autofocus', html)  # focus where to type again
        assert "Set-Cookie" not in headers or "access" not in headers["Set-Cookie"]
    logins = gw.app[METRICS].logins.labels("invalid_credentials").value
    assert logins == 2


async def test_the_form_and_the_json_login_share_the_rate_limits(gw: Gateway) -> None:
    jar = Jar()
    csrf = await form(gw, jar)
    for _ in range(3):
        status, _, _ = await post(gw, jar, username="guang", password="x", csrf=csrf, rd="/")
        assert status == 401
    status, html, headers = await post(gw, jar, username="guang", password="123456", csrf=csrf)
    assert status == 429 and int(headers["Retry-After"]) > 0
    assert alerts(html)[0].startswith("Too many failed logins; try again in ")
    json_login = await gw.client.post(
        "/user/login", json={"username": "guang", "password": "123456"}
    )
    assert json_login.status == 429


async def test_a_login_csrf_without_the_cookie_or_with_another_token_is_refused(
    gw: Gateway,
) -> None:
    jar = Jar()
    csrf = await form(gw, jar)
    for cookies, field in ((Jar(), csrf), (jar, "a" * 43), (jar, ""), (Jar(), "")):
        status, html, _ = await post(gw, cookies, username="guang", password="123456", csrf=field)
        assert status == 403
        assert alerts(html) == ["This form has expired. Please sign in again."]
    assert (await gw.app[STORE].list_sessions(1)) == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://127.0.0.1:1", "Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site"},
        {},
    ],
)
async def test_a_login_post_from_another_origin_is_refused(
    gw: Gateway, headers: dict[str, str]
) -> None:
    jar = Jar()
    fields = {"username": "guang", "password": "123456", "csrf": await form(gw, jar)}
    response = await gw.client.post("/_gateway/login", data=fields, headers=jar.headers(headers))
    assert response.status == 403
    assert (await response.json())["message"].startswith("Cross-origin request refused")


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"json": {"username": "guang"}}, 415,
         "Send the form as application/x-www-form-urlencoded"),
        ({"data": "username=a&username=b"}, 400,
         "The form has the field 'username' more than once"),
        ({"data": "password=x"}, 400, "'username' is required"),
        ({"data": "username=&password=x"}, 400, "'username' must not be empty"),
        ({"data": "username=" + "a" * 300 + "&password=x"}, 400,
         "'username' is longer than 256 characters"),
        ({"data": "username=%ff&password=x"}, 400, "The form is not URL-encoded UTF-8"),
        ({"data": "x=" + "a" * 20000}, 400, "Request body is larger than 16384 bytes"),
        ({"data": "&".join(f"f{i}=1" for i in range(20))}, 400, "The form has more than 16 fields"),
    ],
)  # fmt: skip
async def test_bad_forms_get_clear_json_errors(
    gw: Gateway, kwargs: dict[str, object], status: int, message: str
) -> None:
    headers = same_origin(gw)
    if "data" in kwargs:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    response = await gw.client.post("/_gateway/login", headers=headers, **kwargs)  # type: ignore[arg-type]
    assert response.status == status
    assert await response.json() == error_body(
        status, {400: "Bad Request", 415: "Unsupported Media Type"}[status], message
    )


async def test_other_methods_get_405(gw: Gateway) -> None:
    response = await gw.client.put("/_gateway/login")
    assert response.status == 405 and response.headers["Allow"] == "GET, HEAD, POST"
    head = await gw.client.head("/_gateway/login")
    assert head.status == 200


async def test_a_browser_with_a_live_session_goes_on(gw: Gateway) -> None:
    jar = Jar()
    await log_in_by_form(gw.client, jar)
    again = await gw.client.get(
        "/_gateway/login?rd=/whoami", headers=jar.headers(NAVIGATE), allow_redirects=False
    )
    assert (again.status, again.headers["Location"]) == (303, "/whoami")


async def test_a_new_login_ends_the_browsers_previous_session(gw: Gateway) -> None:
    jar = Jar()
    csrf = await form(gw, jar)  # a second tab keeps this form open
    await log_in_by_form(gw.client, jar)  # the first tab logs in as guang
    guang = Jar(dict(jar.values))
    await gw.add_user("alice", "correct horse")
    status, _, _ = await post(gw, jar, username="alice", password="correct horse", csrf=csrf)
    assert status == 303
    assert (await gw.client.get("/bbb", headers=guang.headers())).status == 401
    assert [s.revoked_at is not None for s in await gw.app[STORE].list_sessions(1)] == [True]
    whoami = await gw.client.get("/whoami", headers=jar.headers())
    assert (await whoami.json())["username"] == "alice"


async def test_no_password_or_token_reaches_the_logs(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    jar = Jar()
    await post(gw, jar, username="guang", password="s3cret-wrong", csrf=await form(gw, jar))
    response = await log_in_by_form(gw.client, jar)
    assert response.status == 303
    gw.clock.advance(1801)
    await gw.client.get("/bbb", headers=jar.headers())
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "s3cret-wrong" not in logged and "123456" not in logged
    for value in jar.values.values():
        assert value not in logged
