"""Reading the sections: one generic reader driven by the fields' declarations, plus the checks
that look at more than one value, each a named function.

A check runs after its section is read (and its unknown keys reported), records problems on the
section's node, and never stops the reading: every problem is reported at once.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from yarl import URL

from .keys import KeyError_, SigningKey, hmac_key, load_private_key, with_previous_keys
from .model import (
    AssertionConfig,
    CorsConfig,
    DatabaseConfig,
    ForwardAuthConfig,
    IdentityHeaders,
    RateLimitConfig,
    ServerConfig,
    SessionConfig,
    TokenConfig,
)
from .nodes import Node
from .settings import HEADER_NAME, declared

__all__ = [
    "check_assertion_header",
    "check_cors_credentials",
    "check_cors_origins",
    "check_database_url",
    "check_decision_cache",
    "check_identity_header_names",
    "check_identity_headers_differ",
    "check_redis_url",
    "check_request_id_header",
    "check_session_outlives_refresh",
    "read_section",
    "read_settings",
    "read_tokens",
]

S = TypeVar("S")
Check = Callable[[Node, S], None]

# Where a signing key may come from; exactly one of them (or none with --demo).
KEY_SOURCES = ("secret", "secret_file", "private_key_file")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")
_DATABASE_NAME = re.compile(r"/[A-Za-z0-9_$]{1,64}")
_UNSETTABLE_HEADERS = frozenset(
    {
        "host",
        "authorization",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "cookie",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
    }
)


def read_settings(node: Node, cls: type) -> dict[str, Any]:
    """The value of every setting `cls` declares, read from `node` (its default when absent)."""
    values: dict[str, Any] = {}
    children: dict[str, Node] = {}
    for item, declaration in declared(cls):
        key, target = declaration.key or item.name, node
        if "." in key:
            # A setting kept in a small mapping of its own (websocket.token_query_parameter).
            parent, key = key.split(".", 1)
            target = children.setdefault(parent, node.child(parent))
        values[item.name] = declaration.kind.read(target, key, item.default)
    for child in children.values():
        child.close()
    return values


def read_section(node: Node, cls: type[S], *checks: Check[S]) -> S:
    """A section made of settings only: read it, report its unknown keys, run its checks."""
    config = cls(**read_settings(node, cls))
    node.close()
    for check in checks:
        check(node, config)
    return config


# --- server, database, rate limits, CORS, identity headers --------------------------------


def check_request_id_header(node: Node, server: ServerConfig) -> None:
    if not HEADER_NAME.fullmatch(server.request_id_header):
        node.problem("request_id_header", f"{server.request_id_header!r} is not a header name")


def check_database_url(node: Node, database: DatabaseConfig) -> None:
    """A MariaDB/MySQL URL with a host and a database name, or an SQLite file."""
    parsed = URL(database.url)
    if parsed.scheme == "sqlite":
        if not parsed.path.strip("/"):
            node.problem("url", "sqlite needs a file, e.g. sqlite:///gateway.db")
    elif parsed.scheme in ("mysql", "mariadb"):
        if not parsed.host or not _DATABASE_NAME.fullmatch(parsed.path):
            node.problem("url", "expected mysql://user:password@host:port/database")
    else:
        node.problem(
            "url", f"must start with mysql:// or sqlite:/// (got {parsed.scheme or 'no scheme'})"
        )


def check_redis_url(node: Node, rate_limits: RateLimitConfig) -> None:
    if rate_limits.redis_url and URL(rate_limits.redis_url).scheme not in (
        "redis",
        "rediss",
        "unix",
    ):
        node.problem("redis_url", "expected redis://host:port/db")


def check_cors_origins(node: Node, cors: CorsConfig) -> None:
    for origin in cors.allowed_origins:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            node.problem("allowed_origins", f"{origin!r} is not an origin like https://app.example")


def check_cors_credentials(node: Node, cors: CorsConfig) -> None:
    """Browsers refuse credentials with `Access-Control-Allow-Origin: *`."""
    if "*" in cors.allowed_origins and cors.allow_credentials:
        node.problem("allow_credentials", "cannot be true when allowed_origins has '*'")


def check_identity_header_names(node: Node, headers: IdentityHeaders) -> None:
    """Valid names, and none the gateway or the HTTP machinery sets itself."""
    for key, name in zip(("user_id", "username", "roles"), headers.names, strict=True):
        if not HEADER_NAME.fullmatch(name):
            node.problem(key, f"{name!r} is not a valid header name")
        elif name.lower() in _UNSETTABLE_HEADERS or name.lower().startswith("proxy-"):
            node.problem(key, f"{name!r} is a header the gateway must not overwrite")


def check_assertion_header(node: Node, assertion: AssertionConfig) -> None:
    name = assertion.header
    if not HEADER_NAME.fullmatch(name):
        node.problem("header", f"{name!r} is not a valid header name")
    elif name.lower() in _UNSETTABLE_HEADERS or name.lower().startswith("proxy-"):
        node.problem("header", f"{name!r} is a header the gateway must not overwrite")


def check_identity_headers_differ(node: Node, headers: IdentityHeaders) -> None:
    # Some servers read X-User_Id as X-User-Id (CGI folds both to HTTP_X_USER_ID).
    folded = [n.lower().replace("_", "-") for n in headers.names]
    if len(set(folded)) != len(folded):
        node.problem("", "user_id, username and roles must be different headers")


# --- tokens and sessions ------------------------------------------------------------------


def read_tokens(node: Node, *, ephemeral_key_ok: bool, base_dir: Path) -> TokenConfig | None:
    """The tokens section; None (with the problem recorded) when there is no usable key."""
    sources = {source: node.text(source, "") for source in KEY_SOURCES}
    algorithm = node.text("algorithm", "") or None
    # Public keys of retired signing keys (key rotation): they still verify, and are published.
    previous = [base_dir / str(path) for _, path in node.items("previous_public_keys") if path]
    values = read_settings(node, TokenConfig)
    node.close()
    check_refresh_outlives_access(node, values["access_ttl"], values["refresh_ttl"])
    check_issuer_and_audience(node, values["issuer"], values["audience"])
    if not check_one_key_source(node, sources):
        return None
    loaded = _signing_key(node, sources, algorithm, ephemeral_key_ok, base_dir)
    if loaded is None:
        return None
    key, ephemeral = loaded
    check_algorithm_fits(node, algorithm, key)
    if previous:
        if not key.asymmetric:
            node.problem("previous_public_keys", "needs private_key_file (an asymmetric key)")
            return None
        try:
            key = with_previous_keys(key, previous)
        except KeyError_ as exc:
            node.problem("previous_public_keys", str(exc))
            return None
    return TokenConfig(key=key, ephemeral=ephemeral, **values)


def check_refresh_outlives_access(node: Node, access_ttl: float, refresh_ttl: float) -> None:
    if refresh_ttl < access_ttl:
        node.problem("refresh_ttl", "must not be shorter than access_ttl")


def check_issuer_and_audience(node: Node, issuer: str, audience: str) -> None:
    if not issuer or not audience:
        node.problem("issuer", "issuer and audience must not be empty")


def check_one_key_source(node: Node, sources: Mapping[str, str]) -> bool:
    """At most one of secret, secret_file, private_key_file (none is left to _signing_key)."""
    chosen = [source for source, value in sources.items() if value]
    if len(chosen) > 1:
        node.problem(chosen[1], f"set only one of {', '.join(sources)} (got {chosen})")
        return False
    return True


def check_algorithm_fits(node: Node, algorithm: str | None, key: SigningKey) -> None:
    if algorithm is not None and algorithm != key.algorithm:
        node.problem("algorithm", f"{algorithm} does not fit the configured key ({key.algorithm})")


def check_session_outlives_refresh(
    node: Node, sessions: SessionConfig, tokens: TokenConfig | None
) -> None:
    """A session must last at least as long as one refresh token does."""
    if tokens is not None and sessions.max_lifetime < tokens.refresh_ttl:
        node.problem("max_lifetime", "must not be shorter than tokens.refresh_ttl")


def check_decision_cache(
    node: Node, forward_auth: ForwardAuthConfig, sessions: SessionConfig
) -> None:
    """A cached decision must not outlive the bound on seeing a revocation."""
    if forward_auth.cache_max_age > sessions.revocation_poll:
        node.problem(
            "cache_max_age",
            f"must not be longer than sessions.revocation_poll ({sessions.revocation_poll:g}s): "
            "an ingress would let a revoked session through for longer",
        )


def _signing_key(
    node: Node,
    sources: Mapping[str, str],
    algorithm: str | None,
    ephemeral_key_ok: bool,
    base_dir: Path,
) -> tuple[SigningKey, bool] | None:
    """The key from the one source given, and whether it is ephemeral; None on a problem."""
    chosen = next((source for source, value in sources.items() if value), None)
    try:
        if chosen == "secret":
            return hmac_key(sources["secret"]), False
        if chosen == "secret_file":
            return hmac_key(_read_secret_file(base_dir / sources["secret_file"])), False
        if chosen == "private_key_file":
            return load_private_key(base_dir / sources["private_key_file"], algorithm), False
    except KeyError_ as exc:
        node.problem(chosen or "secret", str(exc))
        return None
    if ephemeral_key_ok:
        return hmac_key(secrets.token_urlsafe(48)), True
    node.problem(
        "secret",
        "no signing key: set JWT_SECRET (32+ bytes), tokens.secret_file or "
        "tokens.private_key_file; or run `gateway serve --demo` for a throwaway secret",
    )
    return None


def _read_secret_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise KeyError_(f"cannot read {path}: {exc.strerror}") from None
