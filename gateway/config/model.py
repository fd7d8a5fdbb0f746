"""The typed configuration: frozen dataclasses, one per section of the file.

Each setting states its default, its bounds and (when it differs from the field's name) its YAML
key once, on its field (see ``settings``); ``sections`` reads every section from these
declarations. The README's "Configuration reference" documents each key.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from yarl import URL

from ..networks import IpNetwork
from .keys import SigningKey
from .patterns import PathPattern
from .settings import (
    ON_RELOAD,
    ON_RESTART,
    Boolean,
    Choice,
    Duration,
    Fraction,
    HeaderNames,
    HeaderPatterns,
    Integer,
    Methods,
    Networks,
    OptionalBoolean,
    Origins,
    Roles,
    Size,
    Text,
    restart_fields,
    setting,
)

__all__ = [
    "PARSER_FIELD_LIMIT",
    "PARSER_MAX_HEADERS",
    "RESTART_SECTIONS",
    "AssertionConfig",
    "AuditConfig",
    "AuthPolicy",
    "BrowserConfig",
    "CorsConfig",
    "DatabaseConfig",
    "ForwardAuthConfig",
    "GatewayConfig",
    "HealthCheckConfig",
    "IdentityHeaders",
    "LoggingConfig",
    "MetricsConfig",
    "PasswordConfig",
    "RateLimitConfig",
    "RouteConfig",
    "RouteRateLimit",
    "ServerConfig",
    "ServerTlsConfig",
    "SessionConfig",
    "TargetConfig",
    "TokenConfig",
    "UpstreamConfig",
    "UpstreamTlsConfig",
    "changes_needing_restart",
]

ALL_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# aiohttp's own parser limits (server handler_args): a header line or count past these gets
# aiohttp's plain 400 before the gateway sees the request; below them the gateway answers 431.
PARSER_FIELD_LIMIT = 128 * 1024
PARSER_MAX_HEADERS = 256
# Headers other auth proxies set for the user they verified (Authelia, oauth2-proxy, Apache's
# REMOTE_USER, Grafana's auth proxy, Cloudflare Access, IAP, Azure App Service...): a backend that
# once sat behind one may still trust them, so routes drop every client copy by default.
IDENTITY_LIKE_HEADERS = (
    "Remote-User",
    "Remote-Groups",
    "Remote-Email",
    "Remote-Name",
    "X-Remote-User",
    "X-Remote-Group",
    "X-Remote-Groups",
    "X-Remote-Email",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Preferred-Username",
    "X-Forwarded-Access-Token",
    "X-Auth-Request-*",
    "X-Authenticated-*",
    "X-Authentik-*",
    "X-Pomerium-*",
    "X-WebAuth-*",
    "X-User",
    "X-Username",
    "X-Email",
    "X-Groups",
    "Cf-Access-*",
    "X-Goog-Authenticated-*",
    "X-Goog-Iap-*",
    "X-Ms-Client-Principal*",
    "X-Amzn-Oidc-*",
)
# Loopback and private (RFC 1918, RFC 4193) networks: where a metrics scraper normally is.
_LOCAL_NETWORKS: tuple[IpNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_DAY = 86400.0
_MINUTE = 60.0
# Keys the fingerprints of signing keys for this process only: configs are compared within one
# process (on reload), and a fingerprint seen elsewhere says nothing about a secret.
_FINGERPRINT_KEY = secrets.token_bytes(32)


class AuthPolicy(enum.Enum):
    PUBLIC = "public"
    REQUIRED = "required"
    # The identity is forwarded when a valid token is present; anonymous requests pass too.
    OPTIONAL = "optional"


@dataclass(frozen=True)
class ServerTlsConfig:
    """TLS on the gateway's port (README "TLS"); read, and its files loaded, in config/tls.py.
    Paths are relative to the config file. A SIGHUP reload re-reads the files."""

    # The certificate (PEM; the chain after it) and its private key. Empty cert_file: no TLS.
    cert_file: str = setting("", Text())
    # Empty: the key is in cert_file.
    key_file: str = setting("", Text())
    # CA certificates (PEM) that client certificates must be signed by; set, a client without
    # one is refused during the handshake (mutual TLS).
    client_ca_file: str = setting("", Text())
    # Strict-Transport-Security on every response over TLS; 0: not sent.
    hsts_max_age: int = setting(0, Duration(minimum=0, maximum=2 * 365 * _DAY, whole=True))
    hsts_include_subdomains: bool = setting(False, Boolean())
    # Built from the files when the config is read (not settings).
    context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    # The certificate's subject and expiry, for the log.
    certificate: str = field(default="", compare=False)

    @property
    def enabled(self) -> bool:
        return self.context is not None

    @property
    def hsts_header(self) -> str:
        """The Strict-Transport-Security value; empty when off."""
        if not self.enabled or not self.hsts_max_age:
            return ""
        subdomains = "; includeSubDomains" if self.hsts_include_subdomains else ""
        return f"max-age={self.hsts_max_age}{subdomains}"

    @property
    def restart_settings(self) -> tuple[object, ...]:
        """What a reload cannot change: whether TLS is on, whether clients need certificates,
        the HSTS header (new files and paths are applied)."""
        return (self.enabled, bool(self.client_ca_file), self.hsts_header)


@dataclass(frozen=True)
class ServerConfig:
    host: str = setting("127.0.0.1", Text())
    port: int = setting(8080, Integer(0, 65535))
    # Peers whose X-Forwarded-* values are kept (appended to); everyone else's are replaced.
    trusted_proxies: tuple[IpNetwork, ...] = setting((), Networks())
    # A request header block over either limit gets 431.
    max_header_bytes: int = setting(32 * 1024, Size(1024, PARSER_FIELD_LIMIT))
    max_headers: int = setting(100, Integer(8, PARSER_MAX_HEADERS))
    # False: /BBB and /bbb are one path (for case-insensitive backends); matching lowercases.
    case_sensitive_paths: bool = setting(True, Boolean())
    # Taken from the client when valid, generated otherwise; sent upstream and back.
    request_id_header: str = setting("X-Request-ID", Text())
    # Longest time to wait for in-flight requests on SIGTERM.
    shutdown_timeout: float = setting(30.0, Duration(minimum=0.0))
    # Processes sharing the port (SO_REUSEPORT); `gateway serve --workers N` overrides.
    workers: int = setting(1, Integer(1, 256))
    # A connection must send a complete request head within this long after it opens or after
    # its last request; idle keep-alive connections close after it too (slowloris).
    idle_timeout: float = setting(30.0, Duration(minimum=0.1))
    # Longest wait for the next piece of a request body (a trickling client gets 408).
    client_body_timeout: float = setting(30.0, Duration(minimum=0.1))
    # Bodiless HTTP/1.1 requests meet the gateway's own protocol (gateway.front) and the hot ones
    # are answered without aiohttp's response machinery (gateway.lane); false: aiohttp's
    # protocol serves every request (the same answers, at its cost per request).
    front: bool = setting(True, Boolean())
    # `server.tls`; compared on its own (see changes_needing_restart): new certificates are
    # applied on reload.
    tls: ServerTlsConfig = field(default=ServerTlsConfig(), compare=False)


@dataclass(frozen=True)
class LoggingConfig:
    # json: one JSON object per line (for log shippers); text: for a terminal.
    format: str = setting("json", Choice("json", "text"))
    level: str = setting("info", Choice("debug", "info", "warning", "error"))
    # One line per request (a level above info turns it off too), for those who log at their
    # load balancer instead.
    access_log: bool = setting(True, Boolean())


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = setting(True, Boolean())
    # 0: /metrics on the gateway's own port; otherwise only on this port (with --workers N,
    # worker i listens on port + i).
    port: int = setting(0, Integer(0, 65535))
    # Who may read /metrics (the client's address, behind trusted_proxies): loopback and private
    # networks by default; [0.0.0.0/0, ::/0] for anyone who reaches it.
    allowed_networks: tuple[IpNetwork, ...] = setting(_LOCAL_NETWORKS, Networks())


@dataclass(frozen=True)
class RateLimitConfig:
    """Failed-login limits. See README "Brute-force protection" for the trade-offs."""

    window: float = setting(15 * _MINUTE, Duration(minimum=1.0))
    # Failures for one user name from one client address.
    per_user_and_address: int = setting(10, Integer(0, 1_000_000))
    # Failures for one user name from all addresses together; addresses that logged in as that
    # user recently are exempt, so this cannot lock a user out of their own devices.
    per_user: int = setting(100, Integer(0, 1_000_000))
    # Failures from one client address across all user names (password spraying).
    per_address: int = setting(100, Integer(0, 1_000_000))
    # How long a successful login keeps an address known for its user.
    known_address_ttl: float = setting(30 * _DAY, Duration(minimum=0.0))
    # Shared counters for replicas (redis://host:port/db); empty: counters live in this process.
    redis_url: str = setting("", Text())


@dataclass(frozen=True)
class CorsConfig:
    # Empty: the gateway adds no CORS headers and answers no preflights.
    allowed_origins: frozenset[str] = setting(frozenset(), Origins())
    allowed_methods: tuple[str, ...] = setting(
        ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"), HeaderNames(upper=True)
    )
    allowed_headers: tuple[str, ...] = setting(
        ("Authorization", "Content-Type", "X-Request-ID"), HeaderNames()
    )
    exposed_headers: tuple[str, ...] = setting(("WWW-Authenticate", "X-Request-ID"), HeaderNames())
    allow_credentials: bool = setting(False, Boolean())
    # Seconds a browser may cache a preflight answer.
    max_age: int = setting(600, Duration(minimum=0, maximum=86400, whole=True))

    @property
    def enabled(self) -> bool:
        return bool(self.allowed_origins)

    def allows(self, origin: str) -> bool:
        return origin in self.allowed_origins or "*" in self.allowed_origins


@dataclass(frozen=True)
class BrowserConfig:
    """Web apps a browser navigates to: the login page and cookie sessions (README "Protecting a
    web app"). Checked and the logo read in config/browser.py."""

    # The sessions of /user/login carried in HttpOnly cookies, refreshed inside the gateway, with
    # a login page at /_gateway/login for browser navigations. Bearer clients are unaffected.
    cookie_sessions: bool = setting(True, Boolean())
    # Cookies are __Host-<name>-access, -refresh and -csrf (letters, digits, '-' and '_').
    cookie_name: str = setting("gateway", Text())
    # Plain-HTTP requests between loopback addresses (the demo on http://127.0.0.1) get cookies
    # without Secure, and so without the __Host- prefix; every other request gets Secure ones.
    insecure_loopback: bool = setting(False, Boolean())
    # Other origins of this deployment (https://admin.example): unsafe requests by cookie from
    # them are accepted, and a login may return to them. The gateway's own origin always is.
    trusted_origins: frozenset[str] = setting(frozenset(), Origins())
    # The login page's heading (the app's name), and an image file (PNG, SVG, JPEG, GIF or
    # WebP, at most 64 KiB) shown above it, relative to the config file.
    title: str = setting("", Text())
    logo: str = setting("", Text())
    # The logo as a data: URL, read when the config is loaded (not a setting).
    logo_data_url: str = field(default="", repr=False)


@dataclass(frozen=True)
class DatabaseConfig:
    # mysql://user:pass@host:port/db or sqlite:///path/file.db
    url: str = setting("sqlite:///gateway.db", Text())
    # Longest wait for a connection or a query; then login/refresh/logout answer 503.
    timeout: float = setting(5.0, Duration(minimum=0.1, maximum=120.0))


@dataclass(frozen=True)
class TokenConfig:
    # From exactly one of the keys secret, secret_file, private_key_file (and algorithm). Key
    # objects compare by identity, so configs compare on `key_fingerprint` instead.
    key: SigningKey = field(repr=False, compare=False)
    issuer: str = setting("auth-gateway", Text())
    audience: str = setting("auth-gateway", Text())
    access_ttl: float = setting(30 * _MINUTE, Duration(minimum=1.0))
    refresh_ttl: float = setting(7 * _DAY, Duration(minimum=1.0))
    leeway: float = setting(30.0, Duration(minimum=0.0, maximum=300.0))
    # True when no secret was configured and a random one was made for this process only.
    ephemeral: bool = False
    # Equal for the same key material, whatever objects hold it; never shown.
    key_fingerprint: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_fingerprint", _fingerprint(self.key))


@dataclass(frozen=True)
class SessionConfig:
    # A login's absolute lifetime; refresh-token rotation never extends it.
    max_lifetime: float = setting(30 * _DAY, Duration(minimum=1.0))
    # Re-presenting the immediately previous refresh token within this window is an honest
    # race (two tabs, a lost response), not theft. 0 disables it.
    reuse_grace: float = setting(10.0, Duration(minimum=0.0, maximum=300.0))
    # How often each process reloads the ids of revoked sessions: the bound on how long an
    # access token of a revoked session keeps working (plus one database query).
    revocation_poll: float = setting(2.0, Duration(minimum=0.1, maximum=60.0))
    # Live sessions one user may hold; a login past it ends that user's oldest. 0: no limit.
    max_per_user: int = setting(50, Integer(0, 1_000_000))
    # How often expired and revoked sessions are deleted.
    prune_interval: float = setting(3600.0, Duration(minimum=1.0))


@dataclass(frozen=True)
class PasswordConfig:
    # OWASP's argon2id minimum: 19 MiB, 2 passes, 1 lane.
    memory_kib: int = setting(19456, Integer(8192, 4 * 1024 * 1024))
    time_cost: int = setting(2, Integer(1, 20))
    parallelism: int = setting(1, Integer(1, 16))
    # Threads hashing at once; more logins queue (bounded CPU and memory under a login storm).
    workers: int = setting(2, Integer(1, 64))
    # Logins waiting for a hashing thread at most; more get 503 with Retry-After at once, and no
    # login waits longer than database.timeout for a thread (then 503 too).
    queue: int = setting(64, Integer(1, 100_000))


@dataclass(frozen=True)
class ForwardAuthConfig:
    """The decision endpoint for an ingress (README "Forward auth behind nginx, Caddy, Traefik
    and Envoy"); its requests are believed only from server.trusted_proxies."""

    # Seconds an ingress may cache a permitted decision (`Cache-Control: private, max-age=N`,
    # never past the token's expiry); at most sessions.revocation_poll, so a revoked session is
    # refused within the same bound as when proxying. 0: no caching.
    cache_max_age: int = setting(0, Duration(minimum=0, maximum=60, whole=True))


@dataclass(frozen=True)
class AuditConfig:
    """The audit trail (README "Audit trail"): the `gateway.audit` log and `audit_events`."""

    # How long events stay in the table (pruned with the sessions); the log keeps its own.
    retention: float = setting(90 * _DAY, Duration(minimum=3600.0))


@dataclass(frozen=True)
class AssertionConfig:
    """The signed identity assertion for upstreams (README "Identity assertion")."""

    # Send it to every route's upstream; a route's own `assertion: true/false` wins.
    enabled: bool = setting(False, Boolean())
    header: str = setting("X-Gateway-Assertion", Text())
    # Its lifetime; a cached one is reused for the first 80% of it.
    ttl: float = setting(60.0, Duration(minimum=5.0, maximum=60.0))


@dataclass(frozen=True)
class IdentityHeaders:
    user_id: str = setting("X-User-Id", Text())
    username: str = setting("X-User-Name", Text())
    # Comma-separated role names.
    roles: str = setting("X-User-Roles", Text())

    @property
    def names(self) -> tuple[str, ...]:
        return (self.user_id, self.username, self.roles)


@dataclass(frozen=True)
class TargetConfig:
    """One process of an upstream (an item of `targets`, or its `url`)."""

    # http:// or https:// with a host, no query or fragment.
    url: URL
    # Its share of round_robin traffic, and the divisor of its in-flight count for least_requests.
    weight: int = setting(1, Integer(1, 1000))


@dataclass(frozen=True)
class HealthCheckConfig:
    """Active health checks: GET `path` on every target each `interval`; a target that does not
    answer `expect` within `timeout` gets no traffic until it does."""

    path: str = setting("/healthz", Text())
    interval: float = setting(5.0, Duration(minimum=0.05, maximum=3600.0))
    timeout: float = setting(1.0, Duration(minimum=0.01, maximum=60.0))
    expect: int = setting(200, Integer(100, 599))


@dataclass(frozen=True)
class UpstreamTlsConfig:
    """TLS to an https:// upstream (README "TLS"); read in config/tls.py, paths relative to
    the config file."""

    # CA certificates (PEM) the upstream's certificate must be signed by; empty: the system's.
    ca_file: str = setting("", Text())
    # A client certificate (and its key; empty: in cert_file) for upstreams that want mutual TLS.
    cert_file: str = setting("", Text())
    key_file: str = setting("", Text())
    # The name the upstream's certificate must carry, sent as SNI; empty: the URL's host.
    server_name: str = setting("", Text())
    # Built when the config is read; None for a plain-HTTP upstream.
    context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class UpstreamConfig:
    # The key under `upstreams`.
    name: str
    # The first target's URL (`url`, or the first of `targets`).
    url: URL
    # Every target; from `url` alone when not given.
    targets: tuple[TargetConfig, ...] = ()
    connect_timeout: float = setting(5.0, Duration(minimum=0.001))
    # Longest wait for the upstream's response headers or for the next chunk of its body.
    read_timeout: float = setting(30.0, Duration(minimum=0.001), key="timeout")
    # Per target.
    max_connections: int = setting(100, Integer(1, 100_000))
    # `tls`: how an https:// upstream is verified, and the client certificate it is shown.
    tls: UpstreamTlsConfig = UpstreamTlsConfig()
    # Which target takes the next request: in turn by weight, or the one with the fewest
    # requests in flight (per weight).
    balance: str = setting("round_robin", Choice("round_robin", "least_requests"))
    # Extra attempts on another target for a request that failed safely (see README).
    retries: int = setting(1, Integer(0, 10))
    # Retries may add at most this share of requests (plus a small reserve), so retries do not
    # multiply the load of an outage.
    retry_budget: float = setting(0.2, Fraction())
    # Failures in a row that eject a target (a refused connection ejects at once).
    max_failures: int = setting(3, Integer(1, 1000))
    # An ejection lasts this long, doubling while the target keeps failing its probe.
    ejection_time: float = setting(5.0, Duration(minimum=0.01, maximum=3600.0))
    max_ejection_time: float = setting(120.0, Duration(minimum=0.01, maximum=86400.0))
    # The circuit breaker, per target: requests in flight, and requests waiting for a
    # connection (all max_connections busy); beyond either, 503 at once.
    max_requests: int = setting(1000, Integer(1, 1_000_000))
    max_pending: int = setting(100, Integer(0, 1_000_000))
    # Active health checks; None: passive health only.
    health: HealthCheckConfig | None = None

    def __post_init__(self) -> None:
        if not self.targets:
            object.__setattr__(self, "targets", (TargetConfig(self.url),))


@dataclass(frozen=True)
class RouteRateLimit:
    """`routes[].rate_limit`: at most `requests` per `per` for each caller (GCRA: a burst of
    `requests` at once, then one every per/requests), counted by the user's id or by the client
    address. Shared between processes in Redis when `rate_limits.redis_url` is set."""

    requests: int = setting(60, Integer(1, 1_000_000_000))
    per: float = setting(60.0, Duration(minimum=0.001, maximum=30 * _DAY))
    # user: per authenticated user (anonymous callers by address); address: per client address.
    by: str = setting("user", Choice("user", "address"))


@dataclass(frozen=True)
class RouteConfig:
    # Unique; when not given: the path, plus the methods when the route lists them.
    name: str
    # From `path` (required).
    pattern: PathPattern
    # A key of `upstreams` (required).
    upstream: str
    # Required: there is no default policy.
    auth: AuthPolicy
    # None: every method.
    methods: frozenset[str] | None = setting(None, Methods(ALL_METHODS))
    forward_authorization: bool = setting(False, Boolean())
    # Send the signed identity assertion upstream; None: as `assertion.enabled` says.
    assertion: bool | None = setting(None, OptionalBoolean())
    # The user needs at least one of these (403 otherwise). Empty: any authenticated user.
    roles: frozenset[str] = setting(frozenset(), Roles())
    # Rewrite: the forwarded path is add_prefix + (path without strip_prefix).
    strip_prefix: str = setting("", Text())
    add_prefix: str = setting("", Text())
    # Send the client's Host to the upstream instead of the upstream's own.
    preserve_host: bool = setting(False, Boolean())
    # Larger request bodies get 413. 0: no limit.
    max_body_bytes: int = setting(64 * 1024 * 1024, Size(minimum=0), key="max_body_size")
    # None: no limit (README "Route rate limits").
    rate_limit: RouteRateLimit | None = None
    # Client headers never forwarded on this route, in any case and with '_' for '-'; 'X-Foo-*'
    # drops a prefix. Absent: IDENTITY_LIKE_HEADERS; a list replaces it; [] drops none of them.
    drop_request_headers: tuple[str, ...] = setting(IDENTITY_LIKE_HEADERS, HeaderPatterns())

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
    # A reload rebuilds the route table and the upstream pools (proxy/runtime.py) and the
    # WebSocket parameter is read per request; every other section is read at start-up.
    server: ServerConfig = field(metadata=ON_RESTART)
    database: DatabaseConfig = field(metadata=ON_RESTART)
    tokens: TokenConfig = field(metadata=ON_RESTART)
    sessions: SessionConfig = field(metadata=ON_RESTART)
    passwords: PasswordConfig = field(metadata=ON_RESTART)
    identity_headers: IdentityHeaders = field(metadata=ON_RESTART)
    upstreams: Mapping[str, UpstreamConfig] = field(metadata=ON_RELOAD)
    routes: tuple[RouteConfig, ...] = field(metadata=ON_RELOAD)
    cors: CorsConfig = field(default=CorsConfig(), metadata=ON_RESTART)
    logging: LoggingConfig = field(default=LoggingConfig(), metadata=ON_RESTART)
    metrics: MetricsConfig = field(default=MetricsConfig(), metadata=ON_RESTART)
    rate_limits: RateLimitConfig = field(default=RateLimitConfig(), metadata=ON_RESTART)
    browser: BrowserConfig = field(default=BrowserConfig(), metadata=ON_RESTART)
    forward_auth: ForwardAuthConfig = field(default=ForwardAuthConfig(), metadata=ON_RESTART)
    assertion: AssertionConfig = field(default=AssertionConfig(), metadata=ON_RESTART)
    audit: AuditConfig = field(default=AuditConfig(), metadata=ON_RESTART)
    # The query parameter a WebSocket client may carry its access token in (browsers cannot
    # set Authorization on a WebSocket). It is removed before forwarding and never logged.
    websocket_token_parameter: str = setting(
        "access_token",  # a parameter name, not a secret
        Text(),
        key="websocket.token_query_parameter",
        applied_on_reload=True,
    )
    # A WebSocket is closed (1008) this long after it opened, whatever its token; 0: never.
    # Read at start-up (the socket watch is app-scoped, not part of the reloadable runtime).
    websocket_max_lifetime: float = setting(
        24 * 3600.0, Duration(minimum=0.0), key="websocket.max_lifetime"
    )
    # Where the config was read from (not a setting).
    source: str = "<memory>"


# The top-level sections whose changes a SIGHUP reload cannot apply.
RESTART_SECTIONS = restart_fields(GatewayConfig)


def changes_needing_restart(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """The sections that differ between two configs and that only a restart applies."""
    changed = [name for name in RESTART_SECTIONS if getattr(old, name) != getattr(new, name)]
    if old.server.tls.restart_settings != new.server.tls.restart_settings:
        changed.append("server.tls")
    return changed


def _fingerprint(key: SigningKey) -> str:
    """A digest of the verifying key (for HS256, the secret itself) and the algorithm."""
    verifying: Any = key.verifying_key
    material = (
        verifying
        if isinstance(verifying, bytes)
        else verifying.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    digest = hmac.new(_FINGERPRINT_KEY, key.algorithm.encode() + b"\0", hashlib.sha256)
    digest.update(material)
    return digest.hexdigest()
