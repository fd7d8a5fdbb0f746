"""Return URLs after a login are never open redirects: every spelling of another host is `/`."""

from __future__ import annotations

import pytest

from gateway.auth.redirects import LOGIN_PATH, MAX_RETURN_URL, login_location, safe_return_url

OWN = frozenset({"https://gw.example", "http://gw.example"})
TRUSTED = OWN | {"https://admin.example", "http://127.0.0.1:8080"}

KEPT = [
    "/",
    "/bbb",
    "/bbb?x=1&y=%2F",
    "/a/b/c.html#section",
    "/a%20b",
    "/etc/%2F",  # an encoded slash further on is a path on this host
    "/./x",
    "/path/with//double",
    "/x?next=//evil.example",  # other hosts in the query are the app's business
    "https://gw.example/bbb",
    "https://GW.example:443/bbb",
    "https://admin.example",
    "https://admin.example/?q=1",
    "https://admin.example#frag",
    "http://127.0.0.1:8080/demo",
]

REFUSED = [
    # other hosts, absolute and scheme-relative
    "https://evil.example/",
    "http://evil.example",
    "https://gw.example.evil.example/",
    "https://evil.example?https://gw.example",
    "https://admin.example:444/",
    "http://admin.example/",  # the trusted origin is https only
    "//evil.example",
    "//evil.example/path",
    "///evil.example",
    "////evil.example",
    "//gw.example",  # scheme-relative even to ourselves: not needed, not allowed
    # backslashes (browsers read \ as /)
    "/\\evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "/\\/evil.example",
    "https:\\\\evil.example",
    "/bbb\\..\\",
    # other schemes and scheme tricks
    "javascript:alert(1)",
    "JavaScript:alert(1)",
    "javascript://gw.example/%0aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "ftp://gw.example/",
    "mailto:a@b.example",
    "http:evil.example",
    "http:/evil.example",
    "https:/gw.example/bbb",
    "https:gw.example",
    # user info
    "https://gw.example@evil.example/",
    "https://evil.example@gw.example/",
    "https://gw.example:443@evil.example",
    # relative paths without a leading slash
    "evil.example",
    "bbb",
    "./bbb",
    "../bbb",
    "?x=1",
    "#top",
    # whitespace and control characters (browsers drop tab and newline: /\t/x is //x)
    " /bbb",
    "/bbb ",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r/evil.example",
    "\t//evil.example",
    "/bbb\x00",
    "/\x7f",
    "/a b",
    "/\x0b/evil.example",
    # encoded spellings of // and /\ (decoded once, twice or three times by someone)
    "/%2Fevil.example",
    "/%2fevil.example",
    "/%5Cevil.example",
    "/%5cevil.example",
    "/%252Fevil.example",
    "/%25252Fevil.example",
    "/%09/evil.example",
    "/%0a/evil.example",
    "/%0d%0aSet-Cookie:x=y",
    "/%00",
    "%2F%2Fevil.example",
    "%2f%2fevil.example",
    "https%3A%2F%2Fevil.example",
    "https://admin.example/%2Fevil.example",
    "https://admin.example//evil.example",
    # non-ASCII (fullwidth solidus, ideographic full stop, a lookalike host)
    "\uff0f\uff0fevil.example",
    "/\uff0fevil.example",
    "https://gw\u3002example/",
    "https://gw.ex\u0430mple/",
    "/bbb\u2028",
    # empty, None and too long
    "",
    None,
    "/" + "a" * MAX_RETURN_URL,
]


@pytest.mark.parametrize("value", KEPT)
def test_paths_on_this_site_and_trusted_origins_are_kept(value: str) -> None:
    assert safe_return_url(value, allowed_origins=TRUSTED) == value


@pytest.mark.parametrize("value", REFUSED)
def test_everything_else_falls_back_to_the_root(value: str | None) -> None:
    assert safe_return_url(value, allowed_origins=TRUSTED) == "/"


def test_the_refused_list_is_long() -> None:
    assert len(REFUSED) >= 70


def test_an_absolute_url_to_ourselves_needs_our_origin() -> None:
    assert safe_return_url("https://gw.example/x", allowed_origins=frozenset()) == "/"
    assert safe_return_url("https://gw.example/x", allowed_origins=OWN) == "https://gw.example/x"


@pytest.mark.parametrize("path", ["/bbb", "/x?a=1&b=%2B c", "/a#b", "/%2F"])
def test_the_login_location_carries_the_path_encoded(path: str) -> None:
    location = login_location(path)
    assert location.startswith(f"{LOGIN_PATH}?rd=")
    assert "/" not in location[len(LOGIN_PATH) + 4 :]  # one opaque parameter
    assert "&" not in location and "#" not in location
