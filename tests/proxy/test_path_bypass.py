"""Property-based: no spelling of a protected path reaches a protected upstream handler without a
valid token, and spellings of public paths still arrive where they should.

The gateway and a recording upstream run on real ports in a background thread; hypothesis sends
raw request lines over sockets, so no client library normalizes the path first.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.gateways import ThreadedGateway, route

PROTECTED = ("/bbb", "/private/secret", "/Admin/panel")
PUBLIC = "/open/file.txt"


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedGateway]:
    with ThreadedGateway(
        tmp_path_factory.mktemp("bypass"),
        routes=[
            route("/open/**", "public"),
            route("/bbb"),
            route("/private/**"),
            route("/Admin/**"),
        ],
    ) as gateway:
        yield gateway


def as_upstream_sees_it(raw_path: str) -> str:
    """How a permissive backend would read a path: decode everything, resolve dot segments."""
    decoded = unquote(raw_path.split("?", 1)[0]).replace("\\", "/")
    decoded = decoded.split(";", 1)[0]
    return posixpath.normpath("/" + decoded.lstrip("/"))


def is_protected(path: str) -> bool:
    return path == "/bbb" or path.startswith(("/private", "/Admin"))


def _encode_char(draw: st.DrawFn, char: str) -> str:
    how = draw(st.sampled_from(["plain", "plain", "plain", "upper", "lower"]))
    if how == "plain":
        return char
    code = f"{ord(char):02X}"
    return f"%{code}" if how == "upper" else f"%{code.lower()}"


@st.composite
def spellings(draw: st.DrawFn, path: str) -> str:
    """A way of writing `path` that a lenient backend could read as `path`."""
    pieces: list[str] = []
    if draw(st.booleans()):
        pieces.append(
            draw(st.sampled_from(["/open/..", "/open/%2e%2e", "/open/./..", "//open/.."]))
        )
    for segment in path.strip("/").split("/"):
        noise = draw(st.sampled_from(["", "", "/.", "/%2e", "/x/..", "/x/%2E%2e", "/", "/./"]))
        encoded = "".join(_encode_char(draw, c) for c in segment)
        if draw(st.integers(0, 9)) == 0:
            encoded = encoded.swapcase()
        pieces.append(f"{noise}/{encoded}")
    tail = draw(
        st.sampled_from(
            [
                "",
                "",
                "/",
                "/.",
                ";x=1",
                "%3bx",
                "%2f",
                "%5c",
                "?q=/bbb",
                "#frag",
                "%00",
                "/..%2fbbb",
                "\\..\\bbb",
            ]
        )
    )
    return "".join(pieces) + tail


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(target=st.sampled_from(PROTECTED).flatmap(spellings))
def test_no_spelling_of_a_protected_path_gets_through_without_a_token(
    harness: ThreadedGateway, target: str
) -> None:
    before = len(harness.upstream.seen)
    status = harness.get(target)
    assert status < 500, (target, status)
    reached = [path for _, path, _ in harness.upstream.seen[before:]]
    for path in reached:
        assert not is_protected(as_upstream_sees_it(path)), (target, path)
    if status == 200:
        assert reached, target


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(target=spellings(PUBLIC))
def test_spellings_of_a_public_path_arrive_under_it(harness: ThreadedGateway, target: str) -> None:
    before = len(harness.upstream.seen)
    status = harness.get(target)
    assert status in (200, 400, 404), (target, status)
    reached = [path for _, path, _ in harness.upstream.seen[before:]]
    if status == 200:
        assert len(reached) == 1
        assert as_upstream_sees_it(reached[0]).startswith("/open"), (target, reached)
        # What arrives is the canonical form: no dot segments, escapes or doubled slashes left.
        assert "/." not in reached[0] and "//" not in reached[0]
    else:
        assert reached == []


def test_plain_spellings_work(harness: ThreadedGateway) -> None:
    assert harness.get(PUBLIC) == 200
    assert harness.get("/bbb") == 401
    assert harness.get("/open/%66ile.txt") == 200
