"""A browser's cookie handling, written out for tests that drive the gateway with aiohttp's
client: Set-Cookie parsed attribute by attribute, stored per name, sent back in one Cookie
header. (aiohttp's own jar would not send Secure cookies over the test server's plain HTTP.)"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

# What Chromium sends for a top-level navigation, a fetch() and a form POST of its own page.
NAVIGATE = {
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-Site": "none",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
}
FETCH = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty", "Sec-Fetch-Site": "same-origin"}


@dataclass(frozen=True)
class SetCookie:
    name: str
    value: str
    attributes: dict[str, str]

    @classmethod
    def parse(cls, header: str) -> SetCookie:
        first, *rest = (part.strip() for part in header.split(";"))
        name, _, value = first.partition("=")
        attributes = {}
        for item in rest:
            key, _, attribute = item.partition("=")
            attributes[key.lower()] = attribute
        return cls(name, value, attributes)


def set_cookies(response: ClientResponse) -> dict[str, SetCookie]:
    """The response's Set-Cookie headers by cookie name."""
    parsed = (SetCookie.parse(h) for h in response.headers.getall("Set-Cookie", ()))
    return {cookie.name: cookie for cookie in parsed}


@dataclass
class Jar:
    """Cookies by name, updated from responses as a browser would (Max-Age=0 deletes)."""

    values: dict[str, str] = field(default_factory=dict)

    def update(self, response: ClientResponse) -> dict[str, SetCookie]:
        return self.apply(response.headers.getall("Set-Cookie", ()))

    def apply(self, headers: Iterable[str]) -> dict[str, SetCookie]:
        received = {cookie.name: cookie for cookie in map(SetCookie.parse, headers)}
        for name, cookie in received.items():
            if cookie.attributes.get("max-age") == "0":
                self.values.pop(name, None)
            else:
                self.values[name] = cookie.value
        return received

    def header(self, **extra: str) -> str:
        return "; ".join(f"{k}={v}" for k, v in {**self.values, **extra}.items())

    def headers(self, *others: dict[str, str], **extra: str) -> dict[str, str]:
        """A Cookie header (with `extra` cookies added) and other headers."""
        merged: dict[str, str] = {}
        for other in others:
            merged.update(other)
        if self.values or extra:
            merged["Cookie"] = self.header(**extra)
        return merged

    def without(self, *names: str) -> Jar:
        return Jar({k: v for k, v in self.values.items() if k not in names})


def origin_of(client: TestClient[web.Request, web.Application]) -> str:
    """The test server's origin, as its own pages would send it."""
    return str(client.make_url("")).rstrip("/")


async def log_in_by_form(
    client: TestClient[web.Request, web.Application],
    jar: Jar,
    username: str = "guang",
    password: str = "123456",
    *,
    return_to: str = "/bbb",
) -> ClientResponse:
    """What a browser does: GET the login page (its CSRF cookie and field), POST the form back
    with the page's Origin; the 303 is returned, not followed, with its cookies in `jar`."""
    page = await client.get(
        "/_gateway/login", params={"rd": return_to}, headers=jar.headers(NAVIGATE)
    )
    assert page.status == 200, await page.text()
    jar.update(page)
    found = re.search(r'name="csrf" value="([^"]+)"', await page.text())
    assert found is not None
    form = {"username": username, "password": password, "csrf": found.group(1), "rd": return_to}
    submitted = await client.post(
        "/_gateway/login",
        data=form,
        headers=jar.headers(
            NAVIGATE, {"Origin": origin_of(client), "Sec-Fetch-Site": "same-origin"}
        ),
        allow_redirects=False,
    )
    jar.update(submitted)
    return submitted
