"""Traefik's and Envoy's requests, sent exactly as their documentation says they send them, and
the shipped Traefik and Envoy configs checked against what the gateway answers and expects.

- Traefik forwardAuth (doc.traefik.io, middlewares/http/forwardauth): a GET to `address` with the
  client's headers and X-Forwarded-Method, -Proto, -Host, -Uri, -For (Traefik's forwarded-headers
  code also adds X-Forwarded-Port, -Server and X-Real-Ip); `authResponseHeaders` are copied to
  the request, `addAuthCookiesToResponse` cookies to the response; any other status is returned
  to the client as it is.
- Envoy ext_authz HTTP service (envoyproxy.io, ext_authz_filter): the original method, the
  original path and query appended to `path_prefix`, the original Host, Content-Length: 0, and
  Authorization plus `allowed_headers`; Envoy adds x-envoy-expected-rq-timeout-ms. Only a 200
  permits; `allowed_upstream_headers` of a 200 overwrite the request's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.endpoints import OWN_ENDPOINTS
from gateway.forward_auth.shapes import EXT_AUTHZ_PREFIX
from tests.support.cookies import NAVIGATE
from tests.support.gateways import Gateway, GatewayFactory
from tests.support.processes import REPO

from .test_decision import IDENTITY, ROUTES, TRUSTED, traefik

DEPLOY = REPO / "deploy" / "forward-auth"


@pytest.fixture
async def gw(start_gateway: GatewayFactory) -> Gateway:
    gateway: Gateway = await start_gateway(routes=ROUTES, **TRUSTED, demo_user=True)
    return gateway


def traefik_sends(uri: str, method: str = "GET", **client: str) -> dict[str, str]:
    """The forwardAuth headers, and what Traefik's forwarded-headers code adds to them."""
    return {
        **traefik(uri, method, **client),
        "X-Forwarded-Port": "443",
        "X-Forwarded-Server": "traefik-7d9f",
        "X-Real-Ip": "203.0.113.7",
    }


def envoy_sends(**allowed: str) -> dict[str, str]:
    return {
        "Host": "app.example",
        "Content-Length": "0",
        "x-envoy-expected-rq-timeout-ms": "2000",
        "x-forwarded-proto": "https",
        **allowed,
    }


async def test_traefik_forward_auth(gw: Gateway) -> None:
    token = (await gw.login())["access_token"]
    client = gw.client
    ok = await client.get(
        "/_gateway/auth", headers=traefik_sends("/bbb?q=1", Authorization=f"Bearer {token}")
    )
    assert ok.status == 200 and ok.headers["X-User-Name"] == "guang"
    missing = await client.get("/_gateway/auth", headers=traefik_sends("/bbb"))
    assert missing.status == 401 and "WWW-Authenticate" in missing.headers
    # A browser's navigation: Traefik passes the 302 on to it.
    login = await client.get(
        "/_gateway/auth", headers=traefik_sends("/bbb", **NAVIGATE), allow_redirects=False
    )
    assert (login.status, login.headers["Location"]) == (302, "/_gateway/login?rd=/bbb")
    unknown = await client.get("/_gateway/auth", headers=traefik_sends("/nowhere"))
    assert unknown.status == 403


async def test_envoy_ext_authz(gw: Gateway) -> None:
    token = (await gw.login())["access_token"]
    client = gw.client
    ok = await client.get(
        f"{EXT_AUTHZ_PREFIX}/bbb?q=1", headers=envoy_sends(authorization=f"Bearer {token}")
    )
    assert ok.status == 200
    assert [ok.headers[name] for name in IDENTITY] == ["1", "guang", ""]
    # The original method comes as the check's own; the body is never sent nor read.
    post = await client.post(
        f"{EXT_AUTHZ_PREFIX}/whoami", headers=envoy_sends(authorization=f"Bearer {token}")
    )
    assert post.status == 200
    missing = await client.get(f"{EXT_AUTHZ_PREFIX}/bbb", headers=envoy_sends())
    assert missing.status == 401 and "WWW-Authenticate" in missing.headers
    login = await client.get(
        f"{EXT_AUTHZ_PREFIX}/bbb", headers=envoy_sends(**NAVIGATE), allow_redirects=False
    )
    assert (login.status, login.headers["Location"]) == (302, "/_gateway/login?rd=/bbb")
    public = await client.get(f"{EXT_AUTHZ_PREFIX}/aaa", headers=envoy_sends())
    assert public.status == 200
    assert [public.headers[name] for name in IDENTITY] == ["", "", ""]


def _load(name: str) -> Any:
    return yaml.safe_load((DEPLOY / name).read_text())


def _patterns(section: dict[str, Any]) -> set[str]:
    return {pattern["exact"] for pattern in section["patterns"] if "exact" in pattern}


def test_the_shipped_traefik_config_asks_the_decision_endpoint_for_the_identity() -> None:
    config = _load("traefik.yml")["http"]
    decision = next(e.path for e in OWN_ENDPOINTS if e.name == "forward_auth")
    auth = config["middlewares"]["gateway-auth"]["forwardAuth"]
    assert auth["address"].endswith(decision)
    assert set(auth["authResponseHeaders"]) == set(IDENTITY)
    stripped = set(config["middlewares"]["gateway-strip"]["headers"]["customRequestHeaders"])
    assert set(IDENTITY) <= stripped and {"X-Original-URI", "X-Original-Method"} <= stripped
    # Go canonicalizes case but keeps '_' and '-' apart: each name in all four spellings, as a
    # WSGI backend behind Traefik folds every one of them to the real header.
    for name in IDENTITY:
        first, second = name.split("-")[1:]
        assert {f"X{a}{first}{b}{second}" for a in "-_" for b in "-_"} <= stripped, (
            f"a spelling of {name} reaches the app"
        )
    assert config["routers"]["app"]["middlewares"] == ["gateway-strip", "gateway-auth"]
    assert f"!Path(`{decision}`)" in config["routers"]["gateway"]["rule"]


def test_the_shipped_envoy_config_checks_every_request_at_the_prefix() -> None:
    listener = _load("envoy.yaml")["static_resources"]["listeners"][0]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert manager["headers_with_underscores_action"] == "DROP_HEADER"
    authz = manager["http_filters"][0]["typed_config"]
    assert authz["failure_mode_allow"] is False
    service = authz["http_service"]
    assert service["path_prefix"] == EXT_AUTHZ_PREFIX
    response = service["authorization_response"]
    assert _patterns(response["allowed_upstream_headers"]) == {n.lower() for n in IDENTITY}
    assert {"location", "www-authenticate"} <= _patterns(response["allowed_client_headers"])
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[-1] == {"match": {"prefix": "/"}, "route": {"cluster": "app"}}
    hidden = [r["match"] for r in routes if "direct_response" in r]
    assert hidden == [{"path": "/_gateway/auth"}, {"prefix": EXT_AUTHZ_PREFIX}]


def test_every_shipped_ingress_config_is_documented() -> None:
    readme = (REPO / "README.md").read_text()
    for path in sorted(Path(DEPLOY).iterdir()):
        assert f"deploy/forward-auth/{path.name}" in readme, path.name
