"""Configuration: YAML with ${VAR:-default} interpolation, parsed once into frozen typed objects.

Validation collects every problem at once, each prefixed with its YAML path
(``routes[2].upstream: ...``), and raises ``ConfigError``. Nothing else in the gateway reads raw
YAML. The README's "Configuration reference" documents each key; defaults are stated here.
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yarl import URL

from ..errors import ConfigError
from ..networks import IpNetwork
from .endpoints import is_own_path
from .keys import KeyError_, SigningKey, hmac_key, load_private_key
from .names import ROLE_RULE, is_valid_role
from .patterns import PathPattern, PatternError, patterns_overlap

__all__ = [
    "PARSER_FIELD_LIMIT",
    "PARSER_MAX_HEADERS",
    "AuthPolicy",
    "CorsConfig",
    "GatewayConfig",
    "IdentityHeaders",
    "MetricsConfig",
    "PasswordConfig",
    "RateLimitConfig",
    "RouteConfig",
    "ServerConfig",
    "SessionConfig",
    "TokenConfig",
    "UpstreamConfig",
    "load_config",
    "parse_config",
    "parse_duration",
]

ALL_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_ROUTE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SIZE = re.compile(r"(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}
# aiohttp's own parser limits (server handler_args): a header line or count past these gets
# aiohttp's plain 400 before the gateway sees the request; below them the gateway answers 431.
PARSER_FIELD_LIMIT = 128 * 1024
PARSER_MAX_HEADERS = 256
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


class AuthPolicy(enum.Enum):
    PUBLIC = "public"
    REQUIRED = "required"
    # The identity is forwarded when a valid token is present; anonymous requests pass too.
    OPTIONAL = "optional"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # Peers whose X-Forwarded-* values are kept (appended to); everyone else's are replaced.
    trusted_proxies: tuple[IpNetwork, ...] = ()
    # A request header block over either limit gets 431.
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    # False: /BBB and /bbb are one path (for case-insensitive backends); matching lowercases.
    case_sensitive_paths: bool = True
    # Taken from the client when valid, generated otherwise; sent upstream and back.
    request_id_header: str = "X-Request-ID"
    # Longest time to wait for in-flight requests on SIGTERM.
    shutdown_timeout: float = 30.0
    # Processes sharing the port (SO_REUSEPORT); `gateway serve --workers N` overrides.
    workers: int = 1
    # A connection must send a complete request head within this long after it opens or after
    # its last request; idle keep-alive connections close after it too (slowloris).
    idle_timeout: float = 30.0
    # Longest wait for the next piece of a request body (a trickling client gets 408).
    client_body_timeout: float = 30.0


@dataclass(frozen=True)
class LoggingConfig:
    # json: one JSON object per line (for log shippers); text: for a terminal.
    format: str = "json"
    level: str = "info"
    # One line per request at level info (a level above info turns it off too).
    access_log: bool = True


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    # 0: /metrics on the gateway's own port; otherwise only on this port (with --workers N,
    # worker i listens on port + i).
    port: int = 0
    # Who may read /metrics; empty: anyone who can reach it.
    allowed_networks: tuple[IpNetwork, ...] = ()


@dataclass(frozen=True)
class RateLimitConfig:
    """Failed-login limits. See README "Brute-force protection" for the trade-offs."""

    window: float = 15 * 60.0
    # Failures for one user name from one client address.
    per_user_and_address: int = 10
    # Failures for one user name from all addresses together; addresses that logged in as that
    # user recently are exempt, so this cannot lock a user out of their own devices.
    per_user: int = 100
    # Failures from one client address across all user names (password spraying).
    per_address: int = 100
    # How long a successful login keeps an address known for its user.
    known_address_ttl: float = 30 * 86400.0
    # Shared counters for replicas; empty: counters live in this process.
    redis_url: str = ""


@dataclass(frozen=True)
class CorsConfig:
    # Empty: the gateway adds no CORS headers and answers no preflights.
    allowed_origins: frozenset[str] = frozenset()
    allowed_methods: tuple[str, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
    allowed_headers: tuple[str, ...] = ("Authorization", "Content-Type", "X-Request-ID")
    exposed_headers: tuple[str, ...] = ("WWW-Authenticate", "X-Request-ID")
    allow_credentials: bool = False
    max_age: int = 600

    @property
    def enabled(self) -> bool:
        return bool(self.allowed_origins)

    def allows(self, origin: str) -> bool:
        return origin in self.allowed_origins or "*" in self.allowed_origins


@dataclass(frozen=True)
class DatabaseConfig:
    # mysql://user:pass@host:port/db or sqlite:///path/file.db
    url: str = "sqlite:///gateway.db"
    # Longest wait for a connection or a query; then login/refresh/logout answer 503.
    timeout: float = 5.0


@dataclass(frozen=True)
class TokenConfig:
    key: SigningKey = field(repr=False)
    issuer: str = "auth-gateway"
    audience: str = "auth-gateway"
    access_ttl: float = 30 * 60.0
    refresh_ttl: float = 7 * 86400.0
    leeway: float = 30.0
    # True when no secret was configured and a random one was made for this process only.
    ephemeral: bool = False


@dataclass(frozen=True)
class SessionConfig:
    # A login's absolute lifetime; refresh-token rotation never extends it.
    max_lifetime: float = 30 * 86400.0
    # Re-presenting the immediately previous refresh token within this window is an honest
    # race (two tabs, a lost response), not theft. 0 disables it.
    reuse_grace: float = 10.0
    # How often each process reloads the ids of revoked sessions: the bound on how long an
    # access token of a revoked session keeps working (plus one database query).
    revocation_poll: float = 2.0
    # How often expired and revoked sessions are deleted.
    prune_interval: float = 3600.0


@dataclass(frozen=True)
class PasswordConfig:
    # OWASP's argon2id minimum: 19 MiB, 2 passes, 1 lane.
    memory_kib: int = 19456
    time_cost: int = 2
    parallelism: int = 1
    # Threads hashing at once; more logins queue (bounded CPU and memory under a login storm).
    workers: int = 2


@dataclass(frozen=True)
class IdentityHeaders:
    user_id: str = "X-User-Id"
    username: str = "X-User-Name"
    # Comma-separated role names.
    roles: str = "X-User-Roles"

    @property
    def names(self) -> tuple[str, ...]:
        return (self.user_id, self.username, self.roles)


@dataclass(frozen=True)
class UpstreamConfig:
    name: str
    url: URL
    connect_timeout: float = 5.0
    # Longest wait for the upstream's response headers or for the next chunk of its body.
    read_timeout: float = 30.0
    max_connections: int = 100


@dataclass(frozen=True)
class RouteConfig:
    name: str
    pattern: PathPattern
    upstream: str
    auth: AuthPolicy
    # None: every method.
    methods: frozenset[str] | None = None
    forward_authorization: bool = False
    # The user needs at least one of these (403 otherwise). Empty: any authenticated user.
    roles: frozenset[str] = frozenset()
    # Rewrite: the forwarded path is add_prefix + (path without strip_prefix).
    strip_prefix: str = ""
    add_prefix: str = ""
    # Send the client's Host to the upstream instead of the upstream's own.
    preserve_host: bool = False
    # Larger request bodies get 413. 0: no limit.
    max_body_bytes: int = 64 * 1024 * 1024

    def upstream_path(self, path: str) -> str:
        """The path to forward for a matched, normalized request path."""
        if not self.strip_prefix and not self.add_prefix:
            return path
        rest = path[len(self.strip_prefix) :]
        return (self.add_prefix + rest) or "/"

    def allows(self, method: str) -> bool:
        return self.methods is None or method in self.methods


@dataclass(frozen=True)
class GatewayConfig:
    server: ServerConfig
    database: DatabaseConfig
    tokens: TokenConfig
    sessions: SessionConfig
    passwords: PasswordConfig
    identity_headers: IdentityHeaders
    upstreams: Mapping[str, UpstreamConfig]
    routes: tuple[RouteConfig, ...]
    cors: CorsConfig = CorsConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()
    rate_limits: RateLimitConfig = RateLimitConfig()
    # The query parameter a WebSocket client may carry its access token in (browsers cannot
    # set Authorization on a WebSocket). It is removed before forwarding and never logged.
    websocket_token_parameter: str = "access_token"  # noqa: S105 - a parameter name
    source: str = "<memory>"


def parse_duration(value: object) -> float:
    """'30m', '7d', '1h30m', '500ms', '15s', or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 15m, 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text and re.fullmatch(f"(?:{_DURATION_PART.pattern})+", text):
            seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise ValueError(f"{value!r} is not a duration like 30s, 15m, 7d or 1h30m")
    else:
        raise ValueError("expected a duration like 30s, 15m, 7d")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def parse_size(value: object) -> int:
    """'64MiB', '1GiB', '512KB', '100' (bytes)."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 64MiB")
    if isinstance(value, int):
        number, unit = value, "b"
    else:
        match = _SIZE.fullmatch(str(value).strip())
        if match is None:
            raise ValueError(f"{value!r} is not a size like 512KiB, 64MiB or 1GiB")
        number, unit = int(match.group(1)), (match.group(2) or "b").lower()
    if number < 0:
        raise ValueError("must not be negative")
    return number * _SIZE_UNITS[unit]


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
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
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
    problems: list[str] = []
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: the top level must be a mapping of sections"])
    root = _Node(_interpolate(raw, environ, "", problems), "", problems)
    base_dir = base_dir or Path.cwd()

    server = _server(root.child("server"))
    database = _database(root.child("database"))
    tokens = _tokens(root.child("tokens"), ephemeral_key_ok, base_dir)
    sessions = _sessions(root.child("sessions"), tokens)
    passwords = _passwords(root.child("passwords"))
    identity = _identity_headers(root.child("identity_headers"))
    upstreams = _upstreams(root.child("upstreams"))
    routes = _routes(root, upstreams, case_sensitive=server.case_sensitive_paths)
    cors = _cors(root.child("cors"))
    logging_config = _logging(root.child("logging"))
    metrics = _metrics(root.child("metrics"))
    rate_limits = _rate_limits(root.child("rate_limits"))
    websocket = root.child("websocket")
    websocket_token_parameter = websocket.text("token_query_parameter", "access_token")
    websocket.close()
    root.close()
    if problems or tokens is None:
        raise ConfigError([f"{source}: {p}" for p in problems])
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
        websocket_token_parameter=websocket_token_parameter,
        source=source,
    )


# --- sections -----------------------------------------------------------------------------


def _server(node: _Node) -> ServerConfig:
    d = ServerConfig()
    config = ServerConfig(
        host=node.text("host", d.host),
        port=node.integer("port", d.port, minimum=0, maximum=65535),
        trusted_proxies=_networks(node, "trusted_proxies"),
        max_header_bytes=node.size(
            "max_header_bytes", d.max_header_bytes, minimum=1024, maximum=PARSER_FIELD_LIMIT
        ),
        max_headers=node.integer(
            "max_headers", d.max_headers, minimum=8, maximum=PARSER_MAX_HEADERS
        ),
        case_sensitive_paths=node.boolean("case_sensitive_paths", d.case_sensitive_paths),
        request_id_header=node.text("request_id_header", d.request_id_header),
        shutdown_timeout=node.duration("shutdown_timeout", d.shutdown_timeout, minimum=0.0),
        workers=node.integer("workers", d.workers, minimum=1, maximum=256),
        idle_timeout=node.duration("idle_timeout", d.idle_timeout, minimum=0.1),
        client_body_timeout=node.duration(
            "client_body_timeout", d.client_body_timeout, minimum=0.1
        ),
    )
    node.close()
    if not _HEADER_NAME.fullmatch(config.request_id_header):
        node.problem("request_id_header", f"{config.request_id_header!r} is not a header name")
    return config


def _networks(node: _Node, key: str) -> tuple[IpNetwork, ...]:
    networks: list[IpNetwork] = []
    for where, item in node.items(key):
        try:
            networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            node.problem_at(where, f"{item!r} is not an IP address or CIDR network")
    return tuple(networks)


def _logging(node: _Node) -> LoggingConfig:
    d = LoggingConfig()
    config = LoggingConfig(
        format=node.text("format", d.format).lower(),
        level=node.text("level", d.level).lower(),
        access_log=node.boolean("access_log", d.access_log),
    )
    node.close()
    if config.format not in ("json", "text"):
        node.problem("format", f"{config.format!r} must be json or text")
    if config.level not in ("debug", "info", "warning", "error"):
        node.problem("level", f"{config.level!r} must be debug, info, warning or error")
    return config


def _metrics(node: _Node) -> MetricsConfig:
    d = MetricsConfig()
    config = MetricsConfig(
        enabled=node.boolean("enabled", d.enabled),
        port=node.integer("port", d.port, minimum=0, maximum=65535),
        allowed_networks=_networks(node, "allowed_networks"),
    )
    node.close()
    return config


def _rate_limits(node: _Node) -> RateLimitConfig:
    d = RateLimitConfig()
    config = RateLimitConfig(
        window=node.duration("window", d.window, minimum=1.0),
        per_user_and_address=node.integer(
            "per_user_and_address", d.per_user_and_address, minimum=0, maximum=1_000_000
        ),
        per_user=node.integer("per_user", d.per_user, minimum=0, maximum=1_000_000),
        per_address=node.integer("per_address", d.per_address, minimum=0, maximum=1_000_000),
        known_address_ttl=node.duration("known_address_ttl", d.known_address_ttl, minimum=0.0),
        redis_url=node.text("redis_url", d.redis_url),
    )
    node.close()
    if config.redis_url and URL(config.redis_url).scheme not in ("redis", "rediss", "unix"):
        node.problem("redis_url", "expected redis://host:port/db")
    return config


def _cors(node: _Node) -> CorsConfig:
    d = CorsConfig()
    origins = frozenset(str(v).rstrip("/") for _, v in node.items("allowed_origins"))
    config = CorsConfig(
        allowed_origins=origins,
        allowed_methods=_header_list(node, "allowed_methods", d.allowed_methods, upper=True),
        allowed_headers=_header_list(node, "allowed_headers", d.allowed_headers),
        exposed_headers=_header_list(node, "exposed_headers", d.exposed_headers),
        allow_credentials=node.boolean("allow_credentials", d.allow_credentials),
        max_age=int(node.duration("max_age", d.max_age, minimum=0, maximum=86400)),
    )
    node.close()
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin):
            node.problem("allowed_origins", f"{origin!r} is not an origin like https://app.example")
    if "*" in origins and config.allow_credentials:
        node.problem("allow_credentials", "cannot be true when allowed_origins has '*'")
    return config


def _header_list(
    node: _Node, key: str, default: tuple[str, ...], *, upper: bool = False
) -> tuple[str, ...]:
    items = node.items(key)
    if not items:
        return default
    values = []
    for where, item in items:
        value = str(item).strip()
        if not _HEADER_NAME.fullmatch(value):
            node.problem_at(where, f"{value!r} is not a valid name")
        values.append(value.upper() if upper else value)
    return tuple(values)


def _database(node: _Node) -> DatabaseConfig:
    url = node.text("url", DatabaseConfig.url)
    timeout = node.duration("timeout", DatabaseConfig.timeout, minimum=0.1, maximum=120.0)
    node.close()
    parsed = URL(url)
    if parsed.scheme == "sqlite":
        if not parsed.path.strip("/"):
            node.problem("url", "sqlite needs a file, e.g. sqlite:///gateway.db")
    elif parsed.scheme in ("mysql", "mariadb"):
        if not parsed.host or not re.fullmatch(r"/[A-Za-z0-9_$]{1,64}", parsed.path):
            node.problem("url", "expected mysql://user:password@host:port/database")
    else:
        node.problem(
            "url", f"must start with mysql:// or sqlite:/// (got {parsed.scheme or 'no scheme'})"
        )
    return DatabaseConfig(url=url, timeout=timeout)


def _tokens(node: _Node, ephemeral_key_ok: bool, base_dir: Path) -> TokenConfig | None:
    secret = node.text("secret", "")
    secret_file = node.text("secret_file", "")
    key_file = node.text("private_key_file", "")
    algorithm = node.text("algorithm", "") or None
    issuer = node.text("issuer", TokenConfig.issuer)
    audience = node.text("audience", TokenConfig.audience)
    access_ttl = node.duration("access_ttl", TokenConfig.access_ttl, minimum=1.0)
    refresh_ttl = node.duration("refresh_ttl", TokenConfig.refresh_ttl, minimum=1.0)
    leeway = node.duration("leeway", TokenConfig.leeway, minimum=0.0, maximum=300.0)
    node.close()
    if refresh_ttl < access_ttl:
        node.problem("refresh_ttl", "must not be shorter than access_ttl")
    if not issuer or not audience:
        node.problem("issuer", "issuer and audience must not be empty")

    chosen = [
        k
        for k, v in (
            ("secret", secret),
            ("secret_file", secret_file),
            ("private_key_file", key_file),
        )
        if v
    ]
    if len(chosen) > 1:
        node.problem(
            chosen[1], f"set only one of secret, secret_file, private_key_file (got {chosen})"
        )
        return None
    ephemeral = False
    try:
        if secret:
            key = hmac_key(secret)
        elif secret_file:
            key = hmac_key(_read_secret_file(base_dir / secret_file))
        elif key_file:
            key = load_private_key(base_dir / key_file, algorithm)
        elif ephemeral_key_ok:
            key, ephemeral = hmac_key(secrets.token_urlsafe(48)), True
        else:
            node.problem(
                "secret",
                "no signing key: set JWT_SECRET (32+ bytes), tokens.secret_file or "
                "tokens.private_key_file; or run `gateway serve --demo` for a throwaway secret",
            )
            return None
    except KeyError_ as exc:
        node.problem(chosen[0] if chosen else "secret", str(exc))
        return None
    if algorithm is not None and algorithm != key.algorithm:
        node.problem("algorithm", f"{algorithm} does not fit the configured key ({key.algorithm})")
    return TokenConfig(
        key=key,
        issuer=issuer,
        audience=audience,
        access_ttl=access_ttl,
        refresh_ttl=refresh_ttl,
        leeway=leeway,
        ephemeral=ephemeral,
    )


def _read_secret_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise KeyError_(f"cannot read {path}: {exc.strerror}") from None


def _sessions(node: _Node, tokens: TokenConfig | None) -> SessionConfig:
    d = SessionConfig()
    config = SessionConfig(
        max_lifetime=node.duration("max_lifetime", d.max_lifetime, minimum=1.0),
        reuse_grace=node.duration("reuse_grace", d.reuse_grace, minimum=0.0, maximum=300.0),
        revocation_poll=node.duration(
            "revocation_poll", d.revocation_poll, minimum=0.1, maximum=60.0
        ),
        prune_interval=node.duration("prune_interval", d.prune_interval, minimum=1.0),
    )
    node.close()
    if tokens is not None and config.max_lifetime < tokens.refresh_ttl:
        node.problem("max_lifetime", "must not be shorter than tokens.refresh_ttl")
    return config


def _passwords(node: _Node) -> PasswordConfig:
    d = PasswordConfig()
    config = PasswordConfig(
        memory_kib=node.integer("memory_kib", d.memory_kib, minimum=8192, maximum=4 * 1024 * 1024),
        time_cost=node.integer("time_cost", d.time_cost, minimum=1, maximum=20),
        parallelism=node.integer("parallelism", d.parallelism, minimum=1, maximum=16),
        workers=node.integer("workers", d.workers, minimum=1, maximum=64),
    )
    node.close()
    return config


def _identity_headers(node: _Node) -> IdentityHeaders:
    d = IdentityHeaders()
    headers = IdentityHeaders(
        user_id=node.text("user_id", d.user_id),
        username=node.text("username", d.username),
        roles=node.text("roles", d.roles),
    )
    node.close()
    for key, name in zip(("user_id", "username", "roles"), headers.names, strict=True):
        if not _HEADER_NAME.fullmatch(name):
            node.problem(key, f"{name!r} is not a valid header name")
        elif name.lower() in _UNSETTABLE_HEADERS or name.lower().startswith("proxy-"):
            node.problem(key, f"{name!r} is a header the gateway must not overwrite")
    folded = [n.lower().replace("_", "-") for n in headers.names]
    if len(set(folded)) != len(folded):
        node.problem("", "user_id, username and roles must be different headers")
    return headers


def _upstreams(node: _Node) -> dict[str, UpstreamConfig]:
    upstreams: dict[str, UpstreamConfig] = {}
    for name in node.keys():
        item = node.child(name)
        if not _ROUTE_NAME.fullmatch(name):
            node.problem(name, "upstream names may use letters, digits, '_', '.', '-'")
        raw_url = item.text("url", "", required=True)
        url = URL(raw_url)
        if raw_url and (url.scheme not in ("http", "https") or not url.host):
            item.problem("url", f"{raw_url!r} is not an http:// or https:// URL with a host")
        elif url.query_string or url.fragment:
            item.problem("url", "must not have a query string or fragment")
        upstreams[name] = UpstreamConfig(
            name=name,
            url=url,
            connect_timeout=item.duration("connect_timeout", 5.0, minimum=0.001),
            read_timeout=item.duration("timeout", 30.0, minimum=0.001),
            max_connections=item.integer("max_connections", 100, minimum=1, maximum=100_000),
        )
        item.close()
    if not upstreams:
        node.problem("", "define at least one upstream (name: {url: http://...})")
    return upstreams


def _routes(
    root: _Node, upstreams: Mapping[str, UpstreamConfig], *, case_sensitive: bool
) -> tuple[RouteConfig, ...]:
    routes: list[RouteConfig] = []
    for where, item in root.items("routes"):
        if not isinstance(item, dict):
            root.problem_at(where, "each route must be a mapping with path, upstream and auth")
            continue
        node = _Node(item, where, root.problems)
        path = node.text("path", "", required=True)
        upstream = node.text("upstream", "", required=True)
        auth_text = node.text("auth", "", required=True)
        methods = _methods(node)
        forward_authorization = node.boolean("forward_authorization", False)
        roles = _roles(node)
        strip_prefix = node.text("strip_prefix", "")
        add_prefix = node.text("add_prefix", "")
        preserve_host = node.boolean("preserve_host", False)
        max_body_bytes = node.size("max_body_size", RouteConfig.max_body_bytes, minimum=0)
        # Default names stay unique for one path split by method.
        default_name = path if methods is None else f"{path} {','.join(sorted(methods))}"
        name = node.text("name", "") or default_name
        node.close()
        if not case_sensitive:
            path, strip_prefix = path.lower(), strip_prefix.lower()
        try:
            pattern = PathPattern.parse(path)
        except PatternError as exc:
            if path:
                node.problem("path", f"{path!r}: {exc}")
            continue
        if is_own_path(path):
            node.problem("path", f"{path} is the gateway's own endpoint and cannot be routed")
        if upstream and upstream not in upstreams:
            known = ", ".join(sorted(upstreams)) or "none defined"
            node.problem("upstream", f"unknown upstream {upstream!r} (known: {known})")
        _check_prefixes(node, pattern, strip_prefix, add_prefix)
        try:
            auth = AuthPolicy(auth_text)
        except ValueError:
            if auth_text:
                node.problem("auth", f"{auth_text!r} must be one of: public, required, optional")
            continue
        if roles and auth is not AuthPolicy.REQUIRED:
            node.problem("roles", "roles need auth: required")
        routes.append(
            RouteConfig(
                name=name,
                pattern=pattern,
                upstream=upstream,
                auth=auth,
                methods=methods,
                forward_authorization=forward_authorization,
                roles=roles,
                strip_prefix=strip_prefix,
                add_prefix=add_prefix,
                preserve_host=preserve_host,
                max_body_bytes=max_body_bytes,
            )
        )
    _check_route_conflicts(routes, root.problems)
    return tuple(routes)


def _roles(node: _Node) -> frozenset[str]:
    roles = set()
    for where, item in node.items("roles"):
        if not is_valid_role(str(item)):
            node.problem_at(where, f"{item!r} is not a role name: {ROLE_RULE}")
        roles.add(str(item))
    return frozenset(roles)


def _check_prefixes(node: _Node, pattern: PathPattern, strip_prefix: str, add_prefix: str) -> None:
    if strip_prefix:
        leading = itertools.takewhile(lambda s: "*" not in s, pattern.segments)
        literal = "/" + "/".join(leading)
        if not strip_prefix.startswith("/") or strip_prefix.endswith("/"):
            node.problem("strip_prefix", "must start with '/' and not end with one, like /api")
        elif not (literal + "/").startswith(strip_prefix + "/") or "*" in strip_prefix:
            node.problem("strip_prefix", f"{strip_prefix!r} is not a leading part of the path")
    if add_prefix and (not add_prefix.startswith("/") or add_prefix.endswith("/")):
        node.problem("add_prefix", "must start with '/' and not end with one, like /v1")
    if add_prefix and not re.fullmatch(r"(/[A-Za-z0-9\-._~!$&'()+,=:@]+)+", add_prefix):
        node.problem("add_prefix", "may hold only plain path segments")


def _methods(node: _Node) -> frozenset[str] | None:
    methods: set[str] = set()
    for where, item in node.items("methods"):
        method = str(item).upper()
        if method == "*":
            return None
        if method not in ALL_METHODS:
            node.problem_at(where, f"{item!r} is not one of {', '.join(sorted(ALL_METHODS))} or *")
        methods.add(method)
    if not methods:
        return None
    if "GET" in methods:
        methods.add("HEAD")
    return frozenset(methods)


def _check_route_conflicts(routes: list[RouteConfig], problems: list[str]) -> None:
    seen_names: dict[str, int] = {}
    for i, route in enumerate(routes):
        if route.name in seen_names:
            first = seen_names[route.name]
            problems.append(f"routes[{i}].name: {route.name!r} is already used by routes[{first}]")
        seen_names.setdefault(route.name, i)
        for j in range(i):
            other = routes[j]
            if route.pattern.text == other.pattern.text:
                if _methods_overlap(route.methods, other.methods):
                    problems.append(
                        f"routes[{i}].path: {route.pattern.text} duplicates routes[{j}] "
                        "for the same methods; give them disjoint `methods`"
                    )
            # Different patterns that tie are refused whatever their methods: the table picks
            # one pattern per path before it looks at the method.
            elif route.pattern.specificity == other.pattern.specificity and patterns_overlap(
                route.pattern, other.pattern
            ):
                problems.append(
                    f"routes[{i}].path: {route.pattern.text} and routes[{j}] "
                    f"({other.pattern.text}) can match the same path with equal specificity; "
                    "make one of them more specific"
                )


def _methods_overlap(a: frozenset[str] | None, b: frozenset[str] | None) -> bool:
    return a is None or b is None or bool(a & b)


# --- the reader ---------------------------------------------------------------------------


def _interpolate(value: Any, environ: Mapping[str, str], where: str, problems: list[str]) -> Any:
    """Substitute ${VAR} / ${VAR:-default} in every string scalar (after YAML parsing, so an
    environment value can never inject YAML structure)."""
    if isinstance(value, dict):
        return {
            k: _interpolate(v, environ, _join(where, str(k)), problems) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, environ, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ and (environ[name] != "" or default is None):
            return environ[name]
        if default is not None:
            return default
        problems.append(
            f"{where}: environment variable {name} is not set (write ${{{name}:-default}})"
        )
        return ""

    result = _VAR.sub(substitute, value)
    if "${" in result and _VAR.search(value) is None:
        problems.append(f"{where}: malformed ${{...}} reference in {value!r}")
    return result


def _join(where: str, key: str) -> str:
    if not key:
        return where
    return f"{where}.{key}" if where else key


_MISSING: Any = object()


class _Node:
    """A mapping being read: typed getters that record problems under YAML paths."""

    def __init__(self, value: object, where: str, problems: list[str]) -> None:
        self.where, self.problems = where, problems
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.problem("", "must be a mapping")
            value = {}
        self.value: dict[str, Any] = value
        self.seen: set[str] = set()

    def problem(self, key: str, message: str) -> None:
        """Record a problem with a key of this mapping."""
        self.problem_at(_join(self.where, key), message)

    def problem_at(self, where: str, message: str) -> None:
        """Record a problem at an absolute YAML path (as items() returns)."""
        self.problems.append(f"{where or 'config'}: {message}")

    def keys(self) -> list[str]:
        self.seen.update(self.value)
        return [str(k) for k in self.value]

    def _get(self, key: str) -> Any:
        self.seen.add(key)
        return self.value.get(key, _MISSING)

    def text(self, key: str, default: str, *, required: bool = False) -> str:
        value = self._get(key)
        if value is _MISSING or value is None or value == "":
            if required:
                self.problem(key, "is required")
            return default
        if isinstance(value, bool | dict | list):
            self.problem(key, f"expected a string, got {type(value).__name__}")
            return default
        return str(value)

    def integer(self, key: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self._get(key)
        if value is _MISSING or value == "":
            return default
        try:
            if isinstance(value, bool) or not re.fullmatch(r"-?\d+", str(value).strip()):
                raise ValueError
            number = int(str(value).strip())
        except ValueError:
            self.problem(key, f"expected a whole number, got {value!r}")
            return default
        if not minimum <= number <= maximum:
            self.problem(key, f"{number} is outside {minimum}..{maximum}")
            return default
        return number

    def duration(
        self, key: str, default: float, *, minimum: float, maximum: float | None = None
    ) -> float:
        value = self._get(key)
        if value is _MISSING or value == "":
            return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.problem(key, str(exc))
            return default
        if seconds < minimum or (maximum is not None and seconds > maximum):
            bound = f"at least {minimum:g}s" + (f" and at most {maximum:g}s" if maximum else "")
            self.problem(key, f"{value!r} must be {bound}")
            return default
        return seconds

    def size(self, key: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        value = self._get(key)
        if value is _MISSING or value == "":
            return default
        try:
            size = parse_size(value)
        except ValueError as exc:
            self.problem(key, str(exc))
            return default
        if size < minimum or (maximum is not None and size > maximum):
            bound = f"at least {minimum}" + (f" and at most {maximum}" if maximum else "")
            self.problem(key, f"{value!r} must be {bound} bytes")
            return default
        return size

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is _MISSING or value == "":
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        self.problem(key, f"expected true or false, got {value!r}")
        return default

    def child(self, key: str) -> _Node:
        value = self._get(key)
        return _Node(None if value is _MISSING else value, _join(self.where, key), self.problems)

    def items(self, key: str) -> list[tuple[str, Any]]:
        value = self._get(key)
        if value is _MISSING or value is None or value == "":
            return []
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            self.problem(key, "expected a list")
            return []
        return [(f"{_join(self.where, key)}[{i}]", v) for i, v in enumerate(value)]

    def close(self) -> None:
        for key in self.value:
            if key not in self.seen:
                self.problem(str(key), "unknown key")
