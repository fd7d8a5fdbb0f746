"""Configuration: interpolation, durations, typed parsing, and every problem reported at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import AuthPolicy, load_config, parse_config, parse_duration
from gateway.errors import ConfigError
from tests.support.gateways import TEST_SECRET

REPO = Path(__file__).resolve().parents[2]


def minimal(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "tokens": {"secret": TEST_SECRET},
        "upstreams": {"demo": {"url": "http://127.0.0.1:3000"}},
        "routes": [{"path": "/aaa", "upstream": "demo", "auth": "public"}],
    }
    raw.update(overrides)
    return raw


def problems_of(raw: Any, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, environ=environ or {}, source="c.yaml")
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30m", 1800),
        ("7d", 604800),
        ("15s", 15),
        ("1h30m", 5400),
        ("500ms", 0.5),
        ("45", 45),
        (12, 12),
        ("2.5s", 2.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "-1s", "1w", True, [1]])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_shipped_config_reads_the_documented_environment() -> None:
    env = {
        "GATEWAY_HOST": "0.0.0.0",
        "GATEWAY_PORT": "9000",
        "DATABASE_URL": "mysql://gw:pw@db:3306/gateway",
        "JWT_SECRET": TEST_SECRET,
        "UPSTREAM_URL": "http://upstream:3000",
        "ACCESS_TOKEN_TTL": "15m",
        "REFRESH_TOKEN_TTL": "1d",
    }
    config = load_config(REPO / "config.yaml", environ=env)
    assert (config.server.host, config.server.port) == ("0.0.0.0", 9000)
    assert config.database.url == "mysql://gw:pw@db:3306/gateway"
    assert str(config.upstreams["demo"].url) == "http://upstream:3000"
    assert (config.tokens.access_ttl, config.tokens.refresh_ttl) == (900, 86400)
    assert config.tokens.key.algorithm == "HS256"
    policies = {r.pattern.text: r.auth for r in config.routes}
    assert policies == {
        "/": AuthPolicy.PUBLIC,
        "/aaa": AuthPolicy.PUBLIC,
        "/demo": AuthPolicy.PUBLIC,
        "/echo/**": AuthPolicy.PUBLIC,
        "/bbb": AuthPolicy.REQUIRED,
        "/whoami": AuthPolicy.REQUIRED,
        "/ws": AuthPolicy.REQUIRED,
    }


def test_shipped_config_defaults() -> None:
    config = load_config(REPO / "config.yaml", environ={"JWT_SECRET": TEST_SECRET})
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.database.url.startswith("sqlite:///")
    assert (config.tokens.access_ttl, config.tokens.refresh_ttl) == (1800, 7 * 86400)
    assert config.tokens.leeway == 30


def test_shipped_config_without_a_secret_is_refused_unless_demo() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(REPO / "config.yaml", environ={})
    assert any("tokens.secret: no signing key: set JWT_SECRET" in p for p in info.value.problems)
    demo = load_config(REPO / "config.yaml", environ={}, ephemeral_key_ok=True)
    assert demo.tokens.ephemeral


def test_environment_values_cannot_inject_yaml_structure() -> None:
    env = {"VALUE": "x\nroutes: []", "JWT": TEST_SECRET}
    config = parse_config(minimal(tokens={"secret": "${JWT}", "issuer": "${VALUE}"}), environ=env)
    assert config.tokens.issuer == "x\nroutes: []"
    assert len(config.routes) == 1


def test_unset_variable_without_default_is_named() -> None:
    problems = problems_of(minimal(tokens={"secret": "${NOPE}"}))
    assert "c.yaml: tokens.secret: environment variable NOPE is not set" in problems[0]


def test_short_secret_is_refused() -> None:
    problems = problems_of(minimal(tokens={"secret": "short"}))
    expected = (
        "c.yaml: tokens.secret: is 5 bytes; use at least 32 random bytes "
        "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
    )
    assert problems == [expected]


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    raw = minimal(
        server={"port": "eighty", "colour": "blue"},
        database={"url": "postgres://x"},
        tokens={"secret": TEST_SECRET, "access_ttl": "soon"},
        upstreams={"demo": {"url": "ftp://x"}},
        routes=[
            {"path": "aaa", "upstream": "demo", "auth": "public"},
            {"path": "/b", "upstream": "nope", "auth": "public"},
            {"path": "/c", "upstream": "demo", "auth": "maybe"},
            {"path": "/d", "upstream": "demo", "auth": "public", "methods": ["FETCH"]},
            {"path": "/e", "upstream": "demo"},
            "not a mapping",
        ],
    )
    problems = problems_of(raw)
    expected = [
        "server.port: expected a whole number, got 'eighty'",
        "server.colour: unknown key",
        "database.url: must start with mysql:// or sqlite:///",
        "tokens.access_ttl: 'soon' is not a duration",
        "upstreams.demo.url: 'ftp://x' is not an http:// or https:// URL",
        "routes[0].path: 'aaa': must start with '/'",
        "routes[1].upstream: unknown upstream 'nope' (known: demo)",
        "routes[2].auth: 'maybe' must be one of: public, required",
        "routes[3].methods[0]: 'FETCH' is not one of",
        "routes[4].auth: is required",
        "routes[5]: each route must be a mapping",
    ]
    for fragment in expected:
        assert any(fragment in p for p in problems), (fragment, problems)
    assert all(p.startswith("c.yaml: ") for p in problems)


@pytest.mark.parametrize(
    ("routes", "fragment"),
    [
        (
            [
                {"path": "/a", "upstream": "demo", "auth": "public"},
                {"path": "/a", "upstream": "demo", "auth": "required"},
            ],
            "routes[1].path: /a duplicates routes[0] for the same methods",
        ),
        (
            [
                {"path": "/a/*", "upstream": "demo", "auth": "public"},
                {"path": "/*/b", "upstream": "demo", "auth": "required"},
            ],
            None,  # different specificity: /a/* wins on the first segment, not ambiguous
        ),
        (
            [
                {"path": "/x/a*", "upstream": "demo", "auth": "public", "methods": ["GET"]},
                {"path": "/x/*a", "upstream": "demo", "auth": "required", "methods": ["POST"]},
            ],
            "can match the same path with equal specificity",
        ),
        (
            [
                {"path": "/a/*.js", "upstream": "demo", "auth": "public"},
                {"path": "/a/abc*", "upstream": "demo", "auth": "required"},
            ],
            "can match the same path with equal specificity",
        ),
        (
            [
                {"path": "/a", "upstream": "demo", "auth": "public", "name": "n"},
                {"path": "/b", "upstream": "demo", "auth": "public", "name": "n"},
            ],
            "routes[1].name: 'n' is already used by routes[0]",
        ),
        (
            [{"path": "/user/login", "upstream": "demo", "auth": "public"}],
            "is the gateway's own endpoint",
        ),
        ([{"path": "/a/**/b", "upstream": "demo", "auth": "public"}], "only as the last segment"),
        ([{"path": "/a//b", "upstream": "demo", "auth": "public"}], "empty segment"),
        ([{"path": "/a/../b", "upstream": "demo", "auth": "public"}], "dot segments"),
        ([{"path": "/a%2fb", "upstream": "demo", "auth": "public"}], "has characters outside"),
    ],
)
def test_route_conflicts_and_bad_patterns(routes: list[Any], fragment: str | None) -> None:
    raw = minimal(routes=routes)
    if fragment is None:
        assert len(parse_config(raw, environ={}).routes) == 2
        return
    problems = problems_of(raw)
    assert any(fragment in p for p in problems), problems


def test_same_path_with_disjoint_methods_is_allowed() -> None:
    config = parse_config(
        minimal(
            routes=[
                {"path": "/a", "upstream": "demo", "auth": "public", "methods": ["GET"]},
                {"path": "/a", "upstream": "demo", "auth": "required", "methods": ["POST"]},
            ]
        ),
        environ={},
    )
    assert [r.methods for r in config.routes] == [frozenset({"GET", "HEAD"}), frozenset({"POST"})]


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"user_id": "Authorization"}, "a header the gateway must not overwrite"),
        ({"user_id": "X Bad"}, "is not a valid header name"),
        ({"user_id": "X-Same", "username": "x_same"}, "must be different headers"),
    ],
)
def test_bad_identity_header_names(headers: dict[str, str], fragment: str) -> None:
    problems = problems_of(minimal(identity_headers=headers))
    assert any(fragment in p for p in problems), problems


def test_drop_request_headers_takes_names_and_prefixes_only() -> None:
    route = {"path": "/a", "upstream": "demo", "auth": "public"}
    config = parse_config(
        minimal(
            routes=[
                route,
                {**route, "path": "/b", "drop_request_headers": ["X-Legacy-*", "remote_user"]},
                {**route, "path": "/c", "drop_request_headers": []},
            ]
        ),
        environ={},
    )
    default, listed, empty = (r.drop_request_headers for r in config.routes)
    assert "Remote-User" in default and "X-Auth-Request-*" in default
    assert (listed, empty) == (("X-Legacy-*", "remote_user"), ())
    problems = problems_of(
        minimal(routes=[{**route, "drop_request_headers": ["X-*-User", "X Bad"]}])
    )
    assert "routes[0].drop_request_headers[0]: 'X-*-User' is not a header name" in " ".join(
        problems
    ), problems
    assert any("drop_request_headers[1]: 'X Bad'" in p for p in problems), problems


def test_two_key_sources_are_refused(tmp_path: Path) -> None:
    problems = problems_of(
        minimal(tokens={"secret": TEST_SECRET, "private_key_file": str(tmp_path / "k.pem")})
    )
    assert any("set only one of secret, secret_file, private_key_file" in p for p in problems)


def test_secret_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(TEST_SECRET + "\n")
    config = parse_config(minimal(tokens={"secret_file": "secret"}), environ={}, base_dir=tmp_path)
    assert config.tokens.key.signing_key == TEST_SECRET.encode()


def test_unreadable_and_invalid_files_are_reported(tmp_path: Path) -> None:
    assert "cannot read" in problems_of(minimal(tokens={"secret_file": str(tmp_path / "no")}))[0]
    (tmp_path / "bad.yaml").write_text("routes: [unclosed")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "bad.yaml")
    assert "not valid YAML" in info.value.problems[0]
    with pytest.raises(ConfigError) as missing:
        load_config(tmp_path / "missing.yaml")
    assert "cannot read the config file" in missing.value.problems[0]


def test_top_level_must_be_a_mapping() -> None:
    assert problems_of(["a"]) == ["c.yaml: the top level must be a mapping of sections"]


def test_no_upstreams_is_an_error() -> None:
    problems = problems_of(minimal(upstreams={}, routes=[]))
    assert any("define at least one upstream" in p for p in problems)


@pytest.mark.parametrize(
    ("section", "key", "expected"),
    [
        ({"server": {"prot": 80}}, "server.prot", "unknown key; did you mean 'port'?"),
        ({"rate_limit": {}}, "rate_limit", "unknown key; did you mean 'rate_limits'?"),
        ({"tokens": {"secret": TEST_SECRET, "acess_ttl": "1m"}}, "tokens.acess_ttl", "access_ttl"),
        ({"websocket": {"token_parameter": "t"}}, "websocket.token_parameter", "token_query"),
        ({"server": {"colour": "blue"}}, "server.colour", "unknown key"),  # nothing near it
    ],
)
def test_unknown_keys_suggest_the_nearest_known_key(
    section: dict[str, Any], key: str, expected: str
) -> None:
    problems = problems_of(minimal(**section))
    assert any(p.startswith(f"c.yaml: {key}: unknown key") and expected in p for p in problems)
    assert "c.yaml: server.colour: unknown key" in problems or key != "server.colour"


def test_unknown_keys_in_routes_and_upstreams_suggest_too() -> None:
    problems = problems_of(
        minimal(
            upstreams={"demo": {"url": "http://h", "timout": "5s"}},
            routes=[{"path": "/a", "upstream": "demo", "auth": "public", "method": ["GET"]}],
        )
    )
    assert problems == [
        "c.yaml: upstreams.demo.timout: unknown key; did you mean 'timeout'?",
        "c.yaml: routes[0].method: unknown key; did you mean 'methods'?",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "routes: [unclosed",
            (
                "line 1, column 18: not valid YAML: expected ',' or ']', but got '<stream end>' "
                "(while parsing a flow sequence at line 1, column 9)"
            ),
        ),
        (
            "server:\n  port: 1\n host: x\n",
            "line 3, column 2: not valid YAML: expected <block end>",
        ),
        ("a: b\n c: d\n", "line 2, column 3: not valid YAML: mapping values are not allowed here"),
        ("server:\n  host: \x00\n", "line 2: not valid YAML: character #x0000: special characters"),
    ],
)
def test_yaml_syntax_errors_name_the_file_and_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "bad.yaml")
    [problem] = info.value.problems
    assert problem.startswith(f"{tmp_path / 'bad.yaml'}: {expected}"), problem
    assert "<unicode string>" not in problem and "\n" not in problem


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b"server:\n  host: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "latin1.yaml")
    assert info.value.problems == [
        f"{tmp_path / 'latin1.yaml'}: line 2: not UTF-8 text (invalid continuation byte)"
    ]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # An unset variable is the problem; the empty value it leaves is not another one.
        (
            {"tokens": {"secret": "${JWT}"}},
            "tokens.secret: environment variable JWT is not set (write ${JWT:-default})",
        ),
        (
            {"upstreams": {"demo": {"url": "${U}${U}"}}},
            "upstreams.demo.url: environment variable U is not set (write ${U:-default})",
        ),
        (
            {"routes": [{"path": "${P}", "upstream": "demo", "auth": "public"}]},
            "routes[0].path: environment variable P is not set (write ${P:-default})",
        ),
        # A section that is not a mapping does not also lack its keys.
        ({"tokens": "secret"}, "tokens: must be a mapping"),
        ({"upstreams": {"demo": "http://h"}}, "upstreams.demo: must be a mapping"),
        ({"upstreams": ["http://h"]}, "upstreams: must be a mapping"),
        ({"upstreams": {}}, "upstreams: define at least one upstream (name: {url: http://...})"),
        # An invalid value breaks one rule, reported once.
        (
            {
                "routes": [
                    {"path": "/a", "upstream": "demo", "auth": "public", "add_prefix": "/v1/"}
                ]
            },
            "routes[0].add_prefix: must start with '/' and not end with one, like /v1",
        ),
    ],
)
def test_each_problem_is_reported_once(overrides: dict[str, Any], expected: str) -> None:
    assert problems_of(minimal(**overrides)) == [f"c.yaml: {expected}"]


def test_a_bad_prefix_that_is_not_plain_segments_is_still_refused() -> None:
    route = {"path": "/a", "upstream": "demo", "auth": "public", "add_prefix": "/v1/%2e"}
    assert problems_of(minimal(routes=[route])) == [
        "c.yaml: routes[0].add_prefix: may hold only plain path segments"
    ]


def test_an_unknown_key_is_reported_even_when_its_value_was() -> None:
    problems = problems_of(minimal(server={"prot": "${PORT}"}))
    assert problems == [
        "c.yaml: server.prot: environment variable PORT is not set (write ${PORT:-default})",
        "c.yaml: server.prot: unknown key; did you mean 'port'?",
    ]


DUPLICATE = (
    "c.yaml: routes[{i}].path: /a duplicates routes[{j}] for the same methods; "
    "give them disjoint `methods`"
)


def test_route_conflicts_name_routes_by_their_place_in_the_file() -> None:
    routes = [
        {"path": "not-a-path", "upstream": "demo", "auth": "public"},
        {"path": "/a", "upstream": "demo", "auth": "public", "name": "first"},
        {"path": "/a", "upstream": "demo", "auth": "public", "name": "first"},
    ]
    assert problems_of(minimal(routes=routes)) == [
        "c.yaml: routes[0].path: 'not-a-path': must start with '/'",
        "c.yaml: routes[2].name: 'first' is already used by routes[1]",
        DUPLICATE.format(i=2, j=1),
    ]


def test_a_duplicate_path_is_not_also_reported_as_a_duplicate_default_name() -> None:
    routes = [
        {"path": "/a", "upstream": "demo", "auth": "public"},
        {"path": "/a", "upstream": "demo", "auth": "required"},
    ]
    assert problems_of(minimal(routes=routes)) == [DUPLICATE.format(i=1, j=0)]
    named = [routes[0], {"path": "/b", "upstream": "demo", "auth": "public", "name": "/a"}]
    assert problems_of(minimal(routes=named)) == [
        "c.yaml: routes[1].name: '/a' is already used by routes[0]"
    ]
