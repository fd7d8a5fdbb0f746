"""TLS at the gateway, as a user runs it: `gateway serve` with the shipped config.yaml and
TLS_CERT_FILE / TLS_KEY_FILE (and TLS_CLIENT_CA_FILE, HSTS_MAX_AGE), certificates made by a CA
of the test's own, real sockets."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.support.certificates import CertificateAuthority, Issued, peer_serial
from tests.support.processes import Deployment, Processes


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path, "gateway")


@dataclass(frozen=True)
class TlsDeployment:
    """The shipped config with TLS on and the demo upstream running; the gateway's certificate."""

    deployment: Deployment
    certificate: Issued

    @property
    def port(self) -> int:
        return int(self.deployment.env["GATEWAY_PORT"])

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start_gateway(self) -> Popen[bytes]:
        proc, _ = self.deployment.start_gateway()
        return proc


@pytest.fixture
def tls(tmp_path: Path, processes: Processes, ca: CertificateAuthority) -> TlsDeployment:
    server = ca.issue("gateway")
    deployment = Deployment.with_tls(processes, tmp_path, server, HSTS_MAX_AGE="1d")
    deployment.start_upstream()
    return TlsDeployment(deployment, server)


@dataclass(frozen=True)
class Handshake:
    version: str | None
    alpn: str | None
    serial: int


def handshake(port: int, context: ssl.SSLContext) -> Handshake:
    """A TLS handshake with the gateway, and what it settled (blocking: run it in a thread)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return Handshake(tls.version(), tls.selected_alpn_protocol(), peer_serial(tls))


def wait_for_log(processes: Processes, proc: Popen[bytes], text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = processes.output(proc)
        if text in output:
            return output
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged within {timeout}s:\n{processes.output(proc)}")


async def test_https_works_with_hsts_and_secure_cookies(
    tls: TlsDeployment, ca: CertificateAuthority, processes: Processes
) -> None:
    proc = tls.start_gateway()
    base = tls.base
    wait_for_log(processes, proc, f"gateway listening on {base}")
    connector = aiohttp.TCPConnector(ssl=ca.client_context())
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(f"{base}/aaa") as resp:
            assert resp.status == 200
            assert resp.headers["Strict-Transport-Security"] == "max-age=86400"
        # The shipped config has browser.insecure_loopback on: over TLS the cookies are the
        # __Host- Secure ones all the same.
        async with http.get(f"{base}/_gateway/login", headers={"Accept": "text/html"}) as resp:
            assert resp.status == 200
            cookie = resp.headers["Set-Cookie"]
            assert cookie.startswith("__Host-gateway-csrf=") and cookie.endswith("; Secure")
    assert "WITHOUT Secure" not in processes.output(proc)
    context = ca.client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    settled = await asyncio.to_thread(handshake, tls.port, context)
    assert (settled.version, settled.alpn) == ("TLSv1.3", "http/1.1")
    healthcheck = tls.deployment.run("healthcheck")
    assert (healthcheck.returncode, healthcheck.stdout.strip()) == (0, "healthy")


async def test_over_tls_the_gateways_hsts_replaces_an_upstreams(
    tmp_path: Path, processes: Processes, ca: CertificateAuthority, aiohttp_server: Any
) -> None:
    # An upstream's max-age=0 first would switch the gateway's policy off (RFC 6797: the
    # browser heeds the first).
    async def own_policy(request: web.Request) -> web.Response:
        return web.Response(text="aaa", headers={"Strict-Transport-Security": "max-age=0"})

    upstream_app = web.Application()
    upstream_app.router.add_get("/aaa", own_policy)
    upstream = await aiohttp_server(upstream_app)
    deployment = Deployment.with_tls(
        processes,
        tmp_path,
        ca.issue("gateway"),
        HSTS_MAX_AGE="1d",
        UPSTREAM_URL=f"http://127.0.0.1:{upstream.port}",
    )
    deployment.start_gateway()
    base = f"https://127.0.0.1:{deployment.env['GATEWAY_PORT']}"
    connector = aiohttp.TCPConnector(ssl=ca.client_context())
    async with aiohttp.ClientSession(connector=connector) as http, http.get(f"{base}/aaa") as resp:
        assert (resp.status, await resp.text()) == (200, "aaa")
        assert resp.headers.getall("Strict-Transport-Security") == ["max-age=86400"]


@pytest.mark.parametrize(
    ("version", "ciphers"),
    [
        (ssl.TLSVersion.TLSv1, "DEFAULT"),
        (ssl.TLSVersion.TLSv1_1, "DEFAULT"),
        # TLS 1.2 without forward secrecy, or with a CBC cipher.
        (ssl.TLSVersion.TLSv1_2, "AES128-GCM-SHA256:AES256-SHA256"),
        (ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384"),
    ],
    ids=["tls1.0", "tls1.1", "tls1.2-rsa-kx", "tls1.2-cbc"],
)
async def test_old_protocols_and_weak_ciphers_are_refused_by_the_gateway(
    tls: TlsDeployment,
    ca: CertificateAuthority,
    version: ssl.TLSVersion,
    ciphers: str,
) -> None:
    tls.start_gateway()
    context = ca.client_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # what this test asks for
        context.minimum_version = context.maximum_version = version
    # The client offers them (level 0 allows what the system's OpenSSL would not), so what
    # refuses is the gateway: an alert or a reset from the other side, not a local error.
    context.set_ciphers(f"{ciphers}:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionResetError)) as refused:
        await asyncio.to_thread(handshake, tls.port, context)
    from_the_gateway = (ConnectionResetError, ssl.SSLEOFError)  # it closed, or it alerted:
    assert isinstance(refused.value, from_the_gateway) or "ALERT" in str(refused.value)
    # The same client with TLS 1.2 and a modern cipher is served.
    good = ca.client_context()
    good.maximum_version = ssl.TLSVersion.TLSv1_2
    good.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    assert (await asyncio.to_thread(handshake, tls.port, good)).version == "TLSv1.2"


async def test_plain_http_to_the_tls_port_is_refused_cleanly(
    tls: TlsDeployment, ca: CertificateAuthority, processes: Processes
) -> None:
    proc = tls.start_gateway()
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", tls.port)
        writer.write(b"GET /aaa HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(65536), 5)  # closed, not left hanging
        assert not answer.startswith(b"HTTP/"), answer  # no page over plain HTTP
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await writer.wait_closed()
    connector = aiohttp.TCPConnector(ssl=ca.client_context())
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(f"{tls.base}/aaa") as resp:
            assert resp.status == 200  # and still serving
    logged = processes.output(proc)
    assert "Traceback" not in logged and '"level": "error"' not in logged, logged


async def test_client_certificates_are_required_with_client_ca_file(
    tmp_path: Path, tls: TlsDeployment, ca: CertificateAuthority
) -> None:
    clients = CertificateAuthority(tmp_path, "clients")
    strangers = CertificateAuthority(tmp_path, "strangers")
    tls.deployment.env["TLS_CLIENT_CA_FILE"] = str(clients.cert_file)
    tls.start_gateway()
    url = f"{tls.base}/aaa"

    async def get(context: ssl.SSLContext) -> int | str:
        connector = aiohttp.TCPConnector(ssl=context)
        async with aiohttp.ClientSession(connector=connector) as http:
            try:
                async with http.get(url) as resp:
                    return resp.status
            except aiohttp.ClientError as exc:
                return type(exc).__name__

    member = clients.issue("member", hosts=("member",), client=True)
    stranger = strangers.issue("stranger", hosts=("stranger",), client=True)
    assert await get(ca.client_context(member)) == 200
    # Refused in the handshake (TLS 1.3 tells the client on its first read): no status at all.
    assert not isinstance(await get(ca.client_context()), int)
    assert not isinstance(await get(ca.client_context(stranger)), int)


async def test_sighup_serves_a_new_certificate_and_open_connections_survive(
    tls: TlsDeployment, ca: CertificateAuthority, processes: Processes
) -> None:
    first = tls.certificate
    proc = tls.start_gateway()
    context = ca.client_context()

    async def request(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[bytes, int]:
        writer.write(b"GET /aaa HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        return head.split(b" ", 2)[1], peer_serial(writer.get_extra_info("ssl_object"))

    opened = await asyncio.open_connection("127.0.0.1", tls.port, ssl=context)
    assert await request(*opened) == (b"200", first.serial)

    # Renewed in place, as cert-manager or certbot do: the same paths, new contents.
    second = ca.issue("gateway")
    assert second.cert_file == first.cert_file and second.serial != first.serial
    proc.send_signal(signal.SIGHUP)
    wait_for_log(processes, proc, "TLS: new connections get the certificate")

    fresh = await asyncio.open_connection("127.0.0.1", tls.port, ssl=context)
    assert await request(*fresh) == (b"200", second.serial)
    # The connection opened before the reload is still served, on its first certificate.
    assert await request(*opened) == (b"200", first.serial)
    for _, writer in (opened, fresh):
        writer.close()
        await writer.wait_closed()


async def test_a_reload_with_broken_certificate_files_keeps_the_running_ones(
    tls: TlsDeployment, ca: CertificateAuthority, processes: Processes
) -> None:
    first = tls.certificate
    proc = tls.start_gateway()
    other = ca.issue("other")
    first.key_file.write_bytes(other.key_file.read_bytes())  # a key that is not the cert's
    proc.send_signal(signal.SIGHUP)
    logged = wait_for_log(processes, proc, "config reload refused")
    assert "server.tls.key_file" in logged
    served = await asyncio.to_thread(handshake, tls.port, ca.client_context())
    assert served.serial == first.serial
