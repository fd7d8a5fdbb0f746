"""Path normalization: what is matched is what is forwarded, or the request is refused."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequest
from gateway.proxy.paths import MAX_PATH_LENGTH, normalize_path


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("/", "/"),
        ("/a/b", "/a/b"),
        ("//a///b", "/a/b"),
        ("/a/./b", "/a/b"),
        ("/a/b/../c", "/a/c"),
        ("/a/%2e%2E/c", "/c"),
        ("/a/%2e/c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/", "/a/"),
        ("/%61%62c", "/abc"),
        ("/a%20b", "/a%20b"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
        ("/A/B", "/A/B"),
    ],
)
def test_normalized(raw: str, normalized: str) -> None:
    assert normalize_path(raw) == normalized
    assert normalize_path(normalized) == normalized  # canonical form is a fixed point


@pytest.mark.parametrize(
    "raw",
    [
        "/a%2fb",
        "/a%2Fb",
        "/a%5cb",
        "/a\\b",
        "/a%00",
        "/a;b",
        "/a%3bb",
        "/a%23b",
        "/a#b",
        "/a%3fb",
        "/..",
        "/a/../..",
        "/%2e%2e/x",
        "/a%zz",
        "/a%",
        "/a%ff",
        # A byte that is not UTF-8, as aiohttp hands it over from a header (X-Original-URI).
        "/a\udcff",
        "/a\x01",
        "/a%0a",
        "/a b",
        "relative",
        "*",
        "/" + "a" * MAX_PATH_LENGTH,
        "/ab" * (MAX_PATH_LENGTH // 3 + 1),  # canonical-looking, but too long
    ],
)
def test_refused(raw: str) -> None:
    with pytest.raises(BadRequest):
        normalize_path(raw)
