"""TLS: reading `server.tls` and `upstreams.<name>.tls`, and the SSL contexts built from their
files when the config is loaded, so `gateway check-config` reports a missing or mismatched
certificate, and the reload that a SIGHUP makes (which re-reads the config) re-reads the files.

One policy for both sides: TLS 1.2 or newer; on TLS 1.2 only ECDHE key exchange with AEAD
ciphers (AES-GCM, ChaCha20-Poly1305), as in Mozilla's "intermediate" profile (TLS 1.3's own
suites are all of that kind); no compression, no renegotiation.

Certificates are replaced without dropping connections: the listening context switches each new
handshake to the context the last reload loaded (`follow_reloads`); connections already open
keep the certificate they were made with.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from yarl import URL

from .model import ServerTlsConfig, UpstreamTlsConfig
from .nodes import Node
from .sections import read_settings

__all__ = ["follow_reloads", "read_server_tls", "read_upstream_tls"]

# OpenSSL's names for ECDHE with AES-GCM or ChaCha20-Poly1305 (TLS 1.2; 1.3 has its own list).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def read_server_tls(node: Node, *, base_dir: Path) -> ServerTlsConfig:
    """`server.tls`: off when cert_file is empty; otherwise its context, ready to listen with."""
    values = read_settings(node, ServerTlsConfig)
    node.close()
    cert, key, client_ca = values["cert_file"], values["key_file"], values["client_ca_file"]
    if not cert:
        for name in ("key_file", "client_ca_file"):
            if values[name]:
                node.problem(name, "needs cert_file (TLS is off without a certificate)")
        if values["hsts_max_age"]:
            node.problem("hsts_max_age", "needs cert_file: HSTS is sent only over TLS")
        return ServerTlsConfig(**values)
    chain = _certificate(node, "cert_file", base_dir / cert)
    if chain is None or not _readable(node, "key_file", base_dir / key if key else None):
        return ServerTlsConfig(**values)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_policy(context)
    # aiohttp speaks HTTP/1.1 only: say so, rather than let a client guess.
    context.set_alpn_protocols(["http/1.1"])
    if not _load_chain(node, context, base_dir / cert, base_dir / key if key else None):
        return ServerTlsConfig(**values)
    if client_ca:
        if not _load_cas(node, "client_ca_file", context, base_dir / client_ca):
            return ServerTlsConfig(**values)
        context.verify_mode = ssl.CERT_REQUIRED
    return ServerTlsConfig(**values, context=context, certificate=_describe(chain))


def read_upstream_tls(node: Node, url: URL, *, base_dir: Path) -> UpstreamTlsConfig:
    """`upstreams.<name>.tls`, for an https:// upstream: the context its connections use
    (the system's CAs unless ca_file is set; a client certificate when cert_file is set)."""
    values = read_settings(node, UpstreamTlsConfig)
    node.close()
    if url.scheme != "https":
        if any(values.values()):
            node.problem("", "needs an https:// url (the upstream is spoken to in plain HTTP)")
        return UpstreamTlsConfig(**values)
    ca, cert, key = values["ca_file"], values["cert_file"], values["key_file"]
    if key and not cert:
        node.problem("key_file", "needs cert_file (the client certificate)")
    # Either verifies the certificate and its host name (server_name or the URL's host).
    if ca:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # only that CA, not the system's
        if not _load_cas(node, "ca_file", context, base_dir / ca):
            return UpstreamTlsConfig(**values)
    else:
        context = ssl.create_default_context()
    _apply_policy(context)
    if cert:
        if _certificate(node, "cert_file", base_dir / cert) is None or not _readable(
            node, "key_file", base_dir / key if key else None
        ):
            return UpstreamTlsConfig(**values)
        if not _load_chain(node, context, base_dir / cert, base_dir / key if key else None):
            return UpstreamTlsConfig(**values)
    return UpstreamTlsConfig(**values, context=context)


def follow_reloads(listening: ssl.SSLContext, latest: Callable[[], ssl.SSLContext | None]) -> None:
    """Make each new handshake on `listening` use the context `latest()` returns (the one the
    last reload loaded), when it verifies clients as `listening` does (turning client
    certificates on or off needs a restart). Connections already open keep theirs."""

    def select(ssl_object: ssl.SSLObject, _server_name: str | None, _: ssl.SSLContext) -> None:
        context = latest()
        if (
            context is not None
            and context is not ssl_object.context
            and context.verify_mode == listening.verify_mode
        ):
            ssl_object.context = context

    # Runs for every ClientHello, with or without a server name in it.
    listening.sni_callback = select


def _apply_policy(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def _readable(node: Node, key: str, path: Path | None) -> bool:
    if path is None:
        return True  # the key is in cert_file
    try:
        path.read_bytes()
    except OSError as exc:
        node.problem(key, f"cannot read {path}: {exc.strerror}")
        return False
    return True


def _certificate(node: Node, key: str, path: Path) -> list[x509.Certificate] | None:
    """The PEM certificates in `path` (the first is the server's own), or None (recorded)."""
    try:
        chain = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        node.problem(key, f"cannot read {path}: {exc.strerror}")
        return None
    except ValueError:
        node.problem(key, f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        return None
    return chain


def _load_chain(node: Node, context: ssl.SSLContext, cert: Path, key: Path | None) -> bool:
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        where = "key_file" if key is not None else "cert_file"
        holder = key if key is not None else cert
        node.problem(
            where,
            f"{holder} is not the private key of {cert.name} (PEM, unencrypted): {exc.reason}",
        )
        return False
    return True


def _load_cas(node: Node, key: str, context: ssl.SSLContext, path: Path) -> bool:
    if _certificate(node, key, path) is None:
        return False
    try:
        context.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        node.problem(key, f"{path}: not usable as CA certificates: {exc.reason}")
        return False
    return True


def _describe(chain: list[x509.Certificate]) -> str:
    """The server certificate, for the log: its subject and until when it is valid."""
    leaf = chain[0]
    until = leaf.not_valid_after_utc
    expired = " (EXPIRED)" if until < datetime.datetime.now(datetime.UTC) else ""
    return f"{leaf.subject.rfc4514_string()}, valid until {until:%Y-%m-%d %H:%M} UTC{expired}"
