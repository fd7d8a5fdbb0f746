"""The gateway's own endpoints, in one table: the app registers its handlers from it, and the
config refuses routes that would shadow any of them."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["OWN_ENDPOINTS", "is_own_path"]


@dataclass(frozen=True, slots=True)
class OwnEndpoint:
    # The handler's key in create_app, and the route label in metrics and the access log.
    name: str
    path: str
    # "*": the handler answers every method itself (405 with Allow for the wrong ones, in the
    # JSON shape clients parse, rather than aiohttp's plain-text 405).
    method: str
    # True: the handler also answers every path under `path` + "/" (Envoy's ext_authz appends
    # the original path to a prefix).
    prefix: bool = False


OWN_ENDPOINTS = (
    OwnEndpoint("login", "/user/login", "*"),
    OwnEndpoint("refresh", "/user/refresh", "*"),
    OwnEndpoint("logout", "/user/logout", "*"),
    # The caller's own sessions: list them, end one (README "Your sessions").
    OwnEndpoint("sessions", "/user/sessions", "*"),
    OwnEndpoint("session", "/user/sessions/{session_id}", "*"),
    OwnEndpoint("jwks", "/.well-known/jwks.json", "GET"),
    OwnEndpoint("healthz", "/healthz", "GET"),
    OwnEndpoint("readyz", "/readyz", "GET"),
    OwnEndpoint("metrics", "/metrics", "GET"),
    OwnEndpoint("openapi", "/openapi.json", "GET"),
    OwnEndpoint("client_module", "/_gateway/client.js", "GET"),
    # The login form for browser navigations (browser.cookie_sessions).
    OwnEndpoint("login_page", "/_gateway/login", "*"),
    # Forward auth: an ingress asks whether a request may pass (any method: Envoy sends the
    # original one).
    OwnEndpoint("forward_auth", "/_gateway/auth", "*"),
    OwnEndpoint("ext_authz", "/_gateway/ext-authz", "*", prefix=True),
)
# Everything under this prefix is the gateway's own, named in the table or not.
OWN_PREFIX = "/_gateway/"
_OWN_PATHS = frozenset(endpoint.path for endpoint in OWN_ENDPOINTS if "{" not in endpoint.path)
# A path with a {parameter} owns everything below its literal start.
_OWN_PREFIXES = (
    OWN_PREFIX,
    *(endpoint.path.partition("{")[0] for endpoint in OWN_ENDPOINTS if "{" in endpoint.path),
)


def is_own_path(path: str) -> bool:
    """Whether a normalized path (or a route pattern's literal path) is the gateway's own."""
    return path in _OWN_PATHS or (path + "/").startswith(_OWN_PREFIXES)
