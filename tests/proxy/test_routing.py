"""Route patterns and the route table: the most specific pattern decides, then the method."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import parse_config
from gateway.config.patterns import PathPattern
from gateway.errors import MethodNotAllowed, NotFound
from gateway.proxy.routes import RouteTable
from tests.support.gateways import TEST_SECRET


def table(*routes: dict[str, Any]) -> RouteTable:
    config = parse_config(
        {
            "tokens": {"secret": TEST_SECRET},
            "upstreams": {"u": {"url": "http://127.0.0.1:1"}},
            "routes": [{"upstream": "u", "auth": "public", **r} for r in routes],
        },
        environ={},
    )
    return RouteTable(config.routes)


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/aaa", "/aaa", True),
        ("/aaa", "/aaa/", False),
        ("/aaa", "/aaab", False),
        ("/aaa", "/AAA", False),
        ("/echo/**", "/echo", True),
        ("/echo/**", "/echo/", True),
        ("/echo/**", "/echo/a/b/c", True),
        ("/echo/**", "/echoes", False),
        ("/users/*", "/users/42", True),
        ("/users/*", "/users/", False),
        ("/users/*", "/users/42/posts", False),
        ("/files/*.js", "/files/app.js", True),
        ("/files/*.js", "/files/a/b.js", False),
        ("/**", "/anything/at/all", True),
        ("/", "/", True),
        ("/", "/x", False),
    ],
)
def test_pattern_matching(pattern: str, path: str, matches: bool) -> None:
    assert PathPattern.parse(pattern).matches(path) is matches


def test_most_specific_route_wins() -> None:
    routes = table(
        {"path": "/**", "name": "all"},
        {"path": "/api/**", "name": "api"},
        {"path": "/api/*", "name": "api-one"},
        {"path": "/api/users", "name": "users"},
        {"path": "/api/users/**", "name": "users-tree"},
    )
    assert routes.resolve("/api/users", "GET").name == "users"
    assert routes.resolve("/api/users/1", "GET").name == "users-tree"
    assert routes.resolve("/api/orders", "GET").name == "api-one"
    assert routes.resolve("/api/orders/1", "GET").name == "api"
    assert routes.resolve("/api", "GET").name == "api"
    assert routes.resolve("/elsewhere", "GET").name == "all"


def test_no_match_is_not_found() -> None:
    with pytest.raises(NotFound):
        table({"path": "/a"}).resolve("/b", "GET")


def test_method_mismatch_never_falls_back_to_a_broader_route() -> None:
    routes = table(
        {"path": "/docs/**", "name": "public-docs"},
        {"path": "/docs/secret", "name": "secret", "methods": ["GET"], "auth": "required"},
    )
    with pytest.raises(MethodNotAllowed) as info:
        routes.resolve("/docs/secret", "POST")
    assert info.value.headers["Allow"] == "GET, HEAD"
    assert routes.resolve("/docs/secret", "HEAD").name == "secret"


def test_same_pattern_split_by_method() -> None:
    routes = table(
        {"path": "/items", "name": "read", "methods": ["GET"]},
        {"path": "/items", "name": "write", "methods": ["POST", "PUT"], "auth": "required"},
    )
    assert routes.resolve("/items", "GET").name == "read"
    assert routes.resolve("/items", "PUT").name == "write"
    with pytest.raises(MethodNotAllowed) as info:
        routes.resolve("/items", "DELETE")
    assert info.value.headers["Allow"] == "GET, HEAD, POST, PUT"
