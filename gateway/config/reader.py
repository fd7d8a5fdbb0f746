"""Reading a config file: YAML, then ``${VAR:-default}`` interpolation, then every section.

Substitution runs on the parsed document's string scalars, after YAML parsing, so an environment
value can never inject YAML structure. Every problem is collected with its YAML path and raised
at once as one ``ConfigError``, each line prefixed with the file (``c.yaml: server.port: ...``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .browser import read_browser
from .model import (
    AssertionConfig,
    AuditConfig,
    CorsConfig,
    DatabaseConfig,
    ForwardAuthConfig,
    GatewayConfig,
    IdentityHeaders,
    LoggingConfig,
    MetricsConfig,
    PasswordConfig,
    RateLimitConfig,
    ServerConfig,
    SessionConfig,
)
from .nodes import Node, Problems, join
from .routes import read_routes, read_upstreams
from .sections import (
    check_assertion_header,
    check_cors_credentials,
    check_cors_origins,
    check_database_url,
    check_decision_cache,
    check_identity_header_names,
    check_identity_headers_differ,
    check_redis_url,
    check_request_id_header,
    check_session_outlives_refresh,
    read_section,
    read_settings,
    read_tokens,
)
from .tls import read_server_tls

__all__ = ["load_config", "parse_config"]

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_config(
    path: str | Path,
    *,
    environ: Mapping[str, str] | None = None,
    ephemeral_key_ok: bool = False,
) -> GatewayConfig:
    """Read and validate a config file; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{path}: line {line}: not UTF-8 text ({exc.reason})"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: {_yaml_problem(exc, text)}"]) from None
    return parse_config(
        raw,
        environ=os.environ if environ is None else environ,
        ephemeral_key_ok=ephemeral_key_ok,
        source=str(path),
        base_dir=path.parent,
    )


def parse_config(
    raw: object,
    *,
    environ: Mapping[str, str],
    ephemeral_key_ok: bool = False,
    source: str = "<memory>",
    base_dir: Path | None = None,
) -> GatewayConfig:
    """Validate an already-loaded YAML document (see load_config)."""
    problems = Problems()
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: the top level must be a mapping of sections"])
    root = Node(_interpolate(raw, environ, "", problems), "", problems)
    base_dir = base_dir or Path.cwd()

    server_node = root.child("server")
    server_tls = read_server_tls(server_node.child("tls"), base_dir=base_dir)
    server = dataclasses.replace(
        read_section(server_node, ServerConfig, check_request_id_header), tls=server_tls
    )
    database = read_section(root.child("database"), DatabaseConfig, check_database_url)
    tokens = read_tokens(root.child("tokens"), ephemeral_key_ok=ephemeral_key_ok, base_dir=base_dir)
    sessions = read_section(
        root.child("sessions"),
        SessionConfig,
        lambda node, sessions: check_session_outlives_refresh(node, sessions, tokens),
    )
    passwords = read_section(root.child("passwords"), PasswordConfig)
    identity = read_section(
        root.child("identity_headers"),
        IdentityHeaders,
        check_identity_header_names,
        check_identity_headers_differ,
    )
    upstreams = read_upstreams(root.child("upstreams"), base_dir=base_dir)
    routes = read_routes(root, upstreams, case_sensitive=server.case_sensitive_paths)
    cors = read_section(root.child("cors"), CorsConfig, check_cors_origins, check_cors_credentials)
    logging_config = read_section(root.child("logging"), LoggingConfig)
    metrics = read_section(root.child("metrics"), MetricsConfig)
    rate_limits = read_section(root.child("rate_limits"), RateLimitConfig, check_redis_url)
    browser = read_browser(root.child("browser"), base_dir=base_dir)
    forward_auth = read_section(
        root.child("forward_auth"),
        ForwardAuthConfig,
        lambda node, section: check_decision_cache(node, section, sessions),
    )
    assertion = read_section(root.child("assertion"), AssertionConfig, check_assertion_header)
    audit = read_section(root.child("audit"), AuditConfig)
    top_level = read_settings(root, GatewayConfig)
    root.close()
    if problems or tokens is None:
        raise ConfigError([f"{source}: {p}" for p in problems.messages])
    return GatewayConfig(
        server=server,
        database=database,
        tokens=tokens,
        sessions=sessions,
        passwords=passwords,
        identity_headers=identity,
        upstreams=upstreams,
        routes=routes,
        cors=cors,
        logging=logging_config,
        metrics=metrics,
        rate_limits=rate_limits,
        browser=browser,
        forward_auth=forward_auth,
        assertion=assertion,
        audit=audit,
        source=source,
        **top_level,
    )


def _interpolate(value: Any, environ: Mapping[str, str], where: str, problems: Problems) -> Any:
    """Substitute ${VAR} / ${VAR:-default} in every string scalar of a parsed document."""
    if isinstance(value, dict):
        return {
            k: _interpolate(v, environ, join(where, str(k)), problems) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, environ, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        # ${VAR:-default} also stands for a variable set to the empty string, as in the shell.
        if name in environ and (environ[name] != "" or default is None):
            return environ[name]
        if default is not None:
            return default
        problems.add(where, f"environment variable {name} is not set (write ${{{name}:-default}})")
        problems.settle(where)
        return ""

    result = _VAR.sub(substitute, value)
    if "${" in result and _VAR.search(value) is None:
        problems.add(where, f"malformed ${{...}} reference in {value!r}")
        problems.settle(where)
    return result


def _yaml_problem(exc: yaml.YAMLError, text: str) -> str:
    """One line naming where the YAML is broken (PyYAML's own message names no file and spans
    several lines)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        message = f"line {mark.line + 1}, column {mark.column + 1}: not valid YAML: {exc.problem}"
        if exc.context and exc.context_mark is not None:
            start = exc.context_mark
            message += f" ({exc.context} at line {start.line + 1}, column {start.column + 1})"
        return message
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        return f"line {line}: not valid YAML: character #x{exc.character:04x}: {exc.reason}"
    return f"not valid YAML: {exc}"
