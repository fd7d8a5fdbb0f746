"""TLS to upstreams: the certificate is verified (CA, expiry, host name) before any byte of a
request is sent, a failure is a 502 whose reason is logged, and a client certificate is shown
to upstreams that ask for one. Real upstreams on real ports, with certificates made here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.certificates import CertificateAuthority
from tests.support.errors import error_body
from tests.support.gateways import Gateway, GatewayFactory, bearer_of, route
from upstream_demo import create_upstream_app

Serve = Callable[..., Any]


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path, "upstream")


class TlsUpstream:
    """An upstream that answers with what it saw of TLS: the client certificate's subject."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_get("/aaa", self.handle)
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport else None
        peer = ssl_object.getpeercert() if ssl_object is not None else None
        subject = dict(item for rdn in peer["subject"] for item in rdn) if peer else {}
        return web.json_response({"secure": request.secure, "client": subject.get("commonName")})


async def serve_tls(aiohttp_server: Serve, ca: CertificateAuthority, **issue: Any) -> TlsUpstream:
    upstream = TlsUpstream()
    upstream.server = await aiohttp_server(  # type: ignore[attr-defined]
        upstream.app, ssl=ca.server_context(ca.issue("upstream", **issue))
    )
    return upstream


async def gateway_to(start_gateway: GatewayFactory, upstream: TlsUpstream, **tls: str) -> Gateway:
    server: TestServer = upstream.server  # type: ignore[attr-defined]
    gateway: Gateway = await start_gateway(
        upstream_url=str(server.make_url("/")),
        upstream={"tls": tls},
        routes=[route("/aaa", "public")],
    )
    return gateway


async def test_an_upstream_certificate_from_the_configured_ca_is_accepted(
    aiohttp_server: Serve, start_gateway: GatewayFactory, ca: CertificateAuthority
) -> None:
    upstream = await serve_tls(aiohttp_server, ca)
    gateway = await gateway_to(start_gateway, upstream, ca_file=str(ca.cert_file))
    resp = await gateway.client.get("/aaa")
    assert resp.status == 200
    assert await resp.json() == {"secure": True, "client": None}


@pytest.mark.parametrize(
    ("issue", "tls", "reason"),
    [
        ({"expired": True}, {}, "certificate has expired"),
        ({"hosts": ("other.example",)}, {}, "IP address mismatch"),
        ({"hosts": ("other.example",)}, {"server_name": "api.example"}, "Hostname mismatch"),
    ],
    ids=["expired", "another-host", "server_name-not-in-certificate"],
)
async def test_an_upstream_certificate_that_does_not_verify_is_a_502(
    aiohttp_server: Serve,
    start_gateway: GatewayFactory,
    ca: CertificateAuthority,
    caplog: pytest.LogCaptureFixture,
    issue: dict[str, Any],
    tls: dict[str, str],
    reason: str,
) -> None:
    upstream = await serve_tls(aiohttp_server, ca, **issue)
    gateway = await gateway_to(start_gateway, upstream, ca_file=str(ca.cert_file), **tls)
    with caplog.at_level(logging.WARNING, logger="gateway.proxy.upstream"):
        resp = await gateway.client.get("/aaa")
        assert resp.status == 502
        assert await resp.json() == error_body(
            502, "Bad Gateway", "Upstream 'demo' failed the TLS handshake"
        )
    assert upstream.requests == 0  # nothing was sent to it
    assert reason in caplog.text, caplog.text
    metrics = await (await gateway.client.get("/metrics")).text()
    assert 'gateway_upstream_errors_total{kind="tls",upstream="demo"} 1.0' in metrics


async def test_server_name_names_the_certificate_to_expect(
    aiohttp_server: Serve, start_gateway: GatewayFactory, ca: CertificateAuthority
) -> None:
    upstream = await serve_tls(aiohttp_server, ca, hosts=("api.internal",))
    gateway = await gateway_to(
        start_gateway, upstream, ca_file=str(ca.cert_file), server_name="api.internal"
    )
    assert (await gateway.client.get("/aaa")).status == 200


async def test_a_ca_the_system_does_not_trust_is_refused_by_default(
    aiohttp_server: Serve, start_gateway: GatewayFactory, ca: CertificateAuthority
) -> None:
    upstream = await serve_tls(aiohttp_server, ca)
    gateway = await gateway_to(start_gateway, upstream)
    assert (await gateway.client.get("/aaa")).status == 502
    assert upstream.requests == 0


async def test_the_gateway_shows_its_client_certificate_to_an_upstream_that_asks(
    aiohttp_server: Serve, start_gateway: GatewayFactory, ca: CertificateAuthority, tmp_path: Path
) -> None:
    clients = CertificateAuthority(tmp_path, "clients")
    upstream = TlsUpstream()
    upstream.server = await aiohttp_server(  # type: ignore[attr-defined]
        upstream.app,
        ssl=ca.server_context(ca.issue("upstream"), client_ca=clients.cert_file),
    )
    anonymous = await gateway_to(start_gateway, upstream, ca_file=str(ca.cert_file))
    assert (await anonymous.client.get("/aaa")).status == 502
    client = clients.issue("gateway-client", hosts=("gateway",), client=True)
    mutual = await gateway_to(
        start_gateway,
        upstream,
        ca_file=str(ca.cert_file),
        cert_file=str(client.cert_file),
        key_file=str(client.key_file),
    )
    resp = await mutual.client.get("/aaa")
    assert resp.status == 200
    assert await resp.json() == {"secure": True, "client": "gateway"}
    assert upstream.requests == 1


# A WebSocket handshake written out, so the test reads the gateway's status (101 or 502).
UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


@pytest.mark.parametrize(("expired", "status"), [(False, 101), (True, 502)])
async def test_websockets_to_a_tls_upstream_are_verified_the_same_way(
    aiohttp_server: Serve,
    start_gateway: GatewayFactory,
    ca: CertificateAuthority,
    expired: bool,
    status: int,
) -> None:
    certificate = ca.issue("expired" if expired else "good", expired=expired)
    server = await aiohttp_server(create_upstream_app(), ssl=ca.server_context(certificate))
    gateway: Gateway = await start_gateway(
        upstream_url=str(server.make_url("/")),
        upstream={"tls": {"ca_file": str(ca.cert_file)}},
        routes=[route("/ws")],
        demo_user=True,
    )
    pair = await gateway.login()
    resp = await gateway.client.get("/ws", headers={**bearer_of(pair), **UPGRADE})
    assert resp.status == status, await resp.text()
    resp.close()


async def test_active_health_checks_verify_the_certificate_by_server_name(
    aiohttp_server: Serve, start_gateway: GatewayFactory, ca: CertificateAuthority
) -> None:
    # The checks must expect the name the requests do: checked against the URL's IP address,
    # the upstream's certificate fails, every target is taken out, and the route answers 503.
    upstream = TlsUpstream()
    checks: list[str] = []

    async def healthz(request: web.Request) -> web.Response:
        checks.append(request.path)
        return web.Response(text="ok")

    upstream.app.router.add_get("/healthz", healthz)
    upstream.server = await aiohttp_server(  # type: ignore[attr-defined]
        upstream.app, ssl=ca.server_context(ca.issue("upstream", hosts=("api.internal",)))
    )
    server: TestServer = upstream.server  # type: ignore[attr-defined]
    gateway: Gateway = await start_gateway(
        upstream_url=str(server.make_url("/")),
        upstream={
            "tls": {"ca_file": str(ca.cert_file), "server_name": "api.internal"},
            "health": {"path": "/healthz", "interval": "30s", "timeout": "2s"},
        },
        routes=[route("/aaa", "public")],
    )
    for _ in range(100):  # the first round runs at start
        if checks:
            break
        await asyncio.sleep(0.02)
    assert checks, "the health check never got through the TLS handshake"
    await asyncio.sleep(0.05)  # its verdict is recorded after the answer
    assert (await gateway.client.get("/aaa")).status == 200
