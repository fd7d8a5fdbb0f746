"""Reading `server.tls` and `upstreams.<name>.tls`: the files are loaded with the config, every
problem names its key, and the contexts follow the policy (TLS 1.2+, ECDHE with AEAD)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig, changes_needing_restart, parse_config
from gateway.config.tls import TLS12_CIPHERS
from gateway.errors import ConfigError
from tests.support.certificates import CertificateAuthority, Issued
from tests.support.gateways import TEST_SECRET


def config_with(
    tmp_path: Path, *, tls: dict[str, Any] | None = None, upstream_tls: dict[str, Any] | None = None
) -> GatewayConfig:
    raw: dict[str, Any] = {
        "server": {"tls": tls or {}},
        "tokens": {"secret": TEST_SECRET},
        "upstreams": {"demo": {"url": "https://127.0.0.1:3000", "tls": upstream_tls or {}}},
        "routes": [{"path": "/aaa", "upstream": "demo", "auth": "public"}],
    }
    return parse_config(raw, environ={}, source="c.yaml", base_dir=tmp_path)


def serving(certificate: Issued, **more: str) -> dict[str, Any]:
    """A `server.tls` section serving `certificate`, with `more` keys."""
    return {"cert_file": str(certificate.cert_file), "key_file": str(certificate.key_file), **more}


def problems(tmp_path: Path, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config_with(tmp_path, **kwargs)
    return info.value.problems


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path)


def test_tls_is_off_without_a_certificate(tmp_path: Path) -> None:
    config = config_with(tmp_path)
    assert not config.server.tls.enabled
    assert config.server.tls.hsts_header == ""


def test_server_context_holds_the_policy_and_paths_are_relative_to_the_config(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    ca.issue("server")
    config = config_with(
        tmp_path,
        tls={"cert_file": "server.pem", "key_file": "server-key.pem", "hsts_max_age": "365d"},
    )
    tls = config.server.tls
    assert tls.context is not None
    assert tls.context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert tls.context.verify_mode is ssl.CERT_NONE  # no client_ca_file: no client certificates
    tls12 = {c["name"] for c in tls.context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12, TLS12_CIPHERS
    assert all(name.startswith("ECDHE-") and ("GCM" in name or "CHACHA" in name) for name in tls12)
    assert "CN=localhost" in tls.certificate and "EXPIRED" not in tls.certificate
    assert tls.hsts_header == "max-age=31536000"


def test_client_ca_file_requires_client_certificates(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    server = ca.issue("server")
    tls = config_with(tmp_path, tls=serving(server, client_ca_file=str(ca.cert_file))).server.tls
    assert tls.context is not None and tls.context.verify_mode is ssl.CERT_REQUIRED


def test_every_tls_problem_is_reported_with_its_key(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    server, other = ca.issue("server"), ca.issue("other")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    found = problems(
        tmp_path,
        tls={"cert_file": str(server.cert_file), "key_file": str(other.key_file)},
    )
    assert any(
        p.startswith("c.yaml: server.tls.key_file:") and "is not the private key of server.pem" in p
        for p in found
    ), found
    found = problems(tmp_path, tls={"cert_file": "missing.pem", "client_ca_file": "junk.pem"})
    assert any(
        p.startswith("c.yaml: server.tls.cert_file: cannot read") and "missing.pem" in p
        for p in found
    ), found
    found = problems(tmp_path, tls={"cert_file": "junk.pem"})
    junk = tmp_path / "junk.pem"
    no_pem = "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    assert found == [f"c.yaml: server.tls.cert_file: {junk} {no_pem}"]
    found = problems(tmp_path, tls={"key_file": "k.pem", "hsts_max_age": "1d", "ciphers": "x"})
    assert (
        "c.yaml: server.tls.key_file: needs cert_file (TLS is off without a certificate)" in found
    )
    assert "c.yaml: server.tls.hsts_max_age: needs cert_file: HSTS is sent only over TLS" in found
    assert any(p.startswith("c.yaml: server.tls.ciphers: unknown key") for p in found), found


def test_upstream_tls_problems(tmp_path: Path, ca: CertificateAuthority) -> None:
    client = ca.issue("client", hosts=("gateway",), client=True)
    raw: dict[str, Any] = {
        "tokens": {"secret": TEST_SECRET},
        "upstreams": {
            "plain": {"url": "http://127.0.0.1:3000", "tls": {"ca_file": str(ca.cert_file)}},
            "keyless": {"url": "https://127.0.0.1:3001", "tls": {"key_file": "k.pem"}},
            "badca": {"url": "https://127.0.0.1:3002", "tls": {"ca_file": "nothere.pem"}},
            "good": {
                "url": "https://127.0.0.1:3003",
                "tls": {"cert_file": str(client.cert_file), "key_file": str(client.key_file)},
            },
        },
        "routes": [{"path": "/aaa", "upstream": "good", "auth": "public"}],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(raw, environ={}, source="c.yaml", base_dir=tmp_path)
    found = info.value.problems
    assert (
        "c.yaml: upstreams.plain.tls: needs an https:// url (the upstream is spoken to in "
        "plain HTTP)" in found
    )
    assert (
        "c.yaml: upstreams.keyless.tls.key_file: needs cert_file (the client certificate)" in found
    )
    assert any(p.startswith("c.yaml: upstreams.badca.tls.ca_file: cannot read") for p in found)
    assert not any("upstreams.good" in p for p in found), found


def test_an_https_upstream_verifies_by_default(tmp_path: Path, ca: CertificateAuthority) -> None:
    upstream = config_with(tmp_path).upstreams["demo"]
    context = upstream.tls.context
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    pinned = config_with(
        tmp_path, upstream_tls={"ca_file": str(ca.cert_file), "server_name": "api.internal"}
    ).upstreams["demo"]
    assert pinned.tls.server_name == "api.internal"
    assert pinned.tls.context is not None and pinned.tls.context.verify_mode is ssl.CERT_REQUIRED
    # Only the configured CA: none of the system's.
    assert [c["subject"] for c in pinned.tls.context.get_ca_certs()] == [
        ((("commonName", "test CA"),),)
    ]


def test_a_reload_applies_new_certificate_files_but_not_turning_tls_on(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    first, second = ca.issue("first"), ca.issue("second")
    plain = config_with(tmp_path)
    one = config_with(tmp_path, tls=serving(first))
    two = config_with(tmp_path, tls=serving(second))
    with_clients = config_with(tmp_path, tls=serving(second, client_ca_file=str(ca.cert_file)))
    assert changes_needing_restart(one, two) == []
    assert changes_needing_restart(plain, one) == ["server.tls"]
    assert changes_needing_restart(two, with_clients) == ["server.tls"]
