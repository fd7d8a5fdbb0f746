"""The model states each default and bound once, and says what a reload applies."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest

import gateway.config
from gateway.config import (
    RESTART_SECTIONS,
    BrowserConfig,
    GatewayConfig,
    RouteConfig,
    ServerConfig,
    TokenConfig,
    UpstreamConfig,
    changes_needing_restart,
    parse_config,
)
from gateway.config.settings import Duration, Integer, Kind, Size, declared
from gateway.errors import ConfigError
from tests.support.gateways import TEST_SECRET
from tests.support.keys import write_private_key

from .test_config import minimal, problems_of

# The fields read by hand (each next to its own reader) rather than from a declaration.
EXPLICIT_FIELDS = {
    TokenConfig: {"key", "ephemeral", "key_fingerprint"},
    UpstreamConfig: {"name", "url", "targets", "health", "tls"},
    # server.tls, upstreams.NAME.tls: config/tls.py reads them and loads their files.
    ServerConfig: {"tls"},
    RouteConfig: {"name", "pattern", "upstream", "auth", "rate_limit"},
    BrowserConfig: {"logo_data_url"},
}


def _sections() -> dict[str, type]:
    """GatewayConfig's fields that hold one section dataclass, by YAML key."""
    hints = typing.get_type_hints(GatewayConfig)
    return {
        name: kind
        for name, kind in hints.items()
        if isinstance(kind, type) and dataclasses.is_dataclass(kind)
    }


# Every dataclass a section of the file is read into, with the YAML path of one instance.
WHERE = {
    **{cls: name for name, cls in _sections().items()},
    UpstreamConfig: "upstreams.demo",
    RouteConfig: "routes[0]",
}


def _with(where: str, key: str, value: object) -> dict[str, Any]:
    """The minimal config with `key: value` set in the mapping at `where`."""
    raw = minimal()
    if where == "upstreams.demo":
        raw["upstreams"]["demo"][key] = value
    elif where == "routes[0]":
        raw["routes"][0][key] = value
    else:
        raw.setdefault(where, {})[key] = value
    return raw


def test_every_field_of_a_section_is_a_declared_setting() -> None:
    for cls in WHERE:
        undeclared = {f.name for f in dataclasses.fields(cls)} - {f.name for f, _ in declared(cls)}
        assert undeclared == EXPLICIT_FIELDS.get(cls, set()), cls


def test_empty_sections_give_the_dataclass_defaults() -> None:
    sections = _sections()
    empty: dict[str, Any] = {name: {} for name in sections if name != "tokens"}
    config = parse_config(minimal(**empty, tokens={"secret": TEST_SECRET}), environ={})
    for name, cls in sections.items():
        for item, _ in declared(cls):
            assert getattr(getattr(config, name), item.name) == item.default, (name, item.name)
        if name != "tokens":
            assert getattr(config, name) == cls(), name
    upstream = config.upstreams["demo"]
    assert upstream == UpstreamConfig(name="demo", url=upstream.url)
    route = config.routes[0]
    assert route == RouteConfig(
        name=route.name, pattern=route.pattern, upstream=route.upstream, auth=route.auth
    )
    assert config.websocket_token_parameter == "access_token"
    assert parse_config(minimal(websocket={}), environ={}) == config


def _bound_cases() -> list[Any]:
    """For each bounded setting, a value just outside its bound and the problem it must give."""
    cases = []
    for cls, where in WHERE.items():
        for item, declaration in declared(cls):
            key = declaration.key or item.name
            expected = _outside(declaration.kind)
            if expected is not None and "." not in key:
                value, message = expected
                cases.append(pytest.param(where, key, value, message, id=f"{where}.{key}"))
    return cases


def _outside(kind: Kind) -> tuple[object, str] | None:
    if isinstance(kind, Integer):
        number = kind.maximum + 1
        return number, f"{number} is outside {kind.minimum}..{kind.maximum}"
    if isinstance(kind, Duration) and kind.maximum is not None:
        text = f"{kind.maximum + 1:g}s"
        return text, f"{text!r} must be at least {kind.minimum:g}s and at most {kind.maximum:g}s"
    if isinstance(kind, Duration) and kind.minimum > 0:
        text = f"{kind.minimum / 2:g}s"
        return text, f"{text!r} must be at least {kind.minimum:g}s"
    if isinstance(kind, Size) and kind.maximum is not None:
        text = str(kind.maximum + 1)
        return text, f"{text!r} must be at least {kind.minimum} and at most {kind.maximum} bytes"
    return None


@pytest.mark.parametrize(("where", "key", "value", "message"), _bound_cases())
def test_each_declared_bound_is_enforced(where: str, key: str, value: object, message: str) -> None:
    assert f"c.yaml: {where}.{key}: {message}" in problems_of(_with(where, key, value))


def test_bound_cases_cover_the_sections() -> None:
    covered = {case.values[0] for case in _bound_cases()}
    # Routes have no bound a value can cross (max_body_size: any size from 0).
    unbounded = {"identity_headers", "logging", "routes[0]", "browser"}
    assert covered == set(WHERE.values()) - unbounded


def test_a_setting_is_read_from_its_declared_key() -> None:
    config = parse_config(
        minimal(
            upstreams={"demo": {"url": "http://h", "timeout": "7s"}},
            routes=[{"path": "/a", "upstream": "demo", "auth": "public", "max_body_size": "1KiB"}],
            websocket={"token_query_parameter": "t"},
        ),
        environ={},
    )
    assert config.upstreams["demo"].read_timeout == 7
    assert config.routes[0].max_body_bytes == 1024
    assert config.websocket_token_parameter == "t"
    problems = problems_of(minimal(upstreams={"demo": {"url": "http://h", "read_timeout": "7s"}}))
    assert problems == ["c.yaml: upstreams.demo.read_timeout: unknown key; did you mean 'timeout'?"]


def test_restart_sections_are_derived_from_the_model() -> None:
    applied_on_reload = {"routes", "upstreams", "websocket_token_parameter"}
    not_configuration = {"source"}
    names = [f.name for f in dataclasses.fields(GatewayConfig)]
    assert RESTART_SECTIONS == tuple(
        n for n in names if n not in applied_on_reload | not_configuration
    )
    assert RESTART_SECTIONS == (
        "server",
        "database",
        "tokens",
        "sessions",
        "passwords",
        "identity_headers",
        "cors",
        "logging",
        "metrics",
        "rate_limits",
        "browser",
        "forward_auth",
        "assertion",
        "audit",
        "websocket_max_lifetime",
    )


def test_a_reload_reports_only_sections_it_cannot_apply() -> None:
    old = parse_config(minimal(), environ={})
    assert changes_needing_restart(old, parse_config(minimal(), environ={})) == []
    new_routes = minimal(routes=[{"path": "/b", "upstream": "demo", "auth": "required"}])
    assert changes_needing_restart(old, parse_config(new_routes, environ={})) == []
    moved = minimal(server={"port": 9000}, logging={"level": "debug"})
    assert changes_needing_restart(old, parse_config(moved, environ={})) == ["server", "logging"]


def test_a_changed_signing_secret_needs_a_restart() -> None:
    old = parse_config(minimal(), environ={})
    rotated = parse_config(minimal(tokens={"secret": TEST_SECRET + "2"}), environ={})
    assert old.tokens != rotated.tokens
    assert changes_needing_restart(old, rotated) == ["tokens"]


def test_the_same_key_file_read_twice_compares_equal(tmp_path: Path) -> None:
    first = minimal(tokens={"private_key_file": str(write_private_key(tmp_path / "a.pem"))})
    second = minimal(tokens={"private_key_file": str(write_private_key(tmp_path / "b.pem"))})
    a, again, b = (parse_config(raw, environ={}) for raw in (first, first, second))
    assert a.tokens.key.signing_key is not again.tokens.key.signing_key
    assert a.tokens == again.tokens
    assert changes_needing_restart(a, again) == []
    assert changes_needing_restart(a, b) == ["tokens"]


def test_no_secret_or_fingerprint_is_in_a_repr() -> None:
    config = parse_config(minimal(), environ={})
    for text in (repr(config), repr(config.tokens), str(config)):
        assert TEST_SECRET not in text
        assert config.tokens.key_fingerprint not in text
        assert "key_fingerprint" not in text


def test_config_exports_what_it_promises() -> None:
    for name in gateway.config.__all__:
        assert hasattr(gateway.config, name), name
    with pytest.raises(ConfigError):
        parse_config({"tokens": {}}, environ={})
