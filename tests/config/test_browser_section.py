"""The `browser` section: cookie sessions on by default, its checks, and the logo file."""

from __future__ import annotations

import base64
from pathlib import Path

from gateway.config import BrowserConfig, load_config, parse_config

from .test_config import REPO, minimal, problems_of

# The smallest valid PNG: one transparent pixel.
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def test_cookie_sessions_are_on_by_default_and_secure() -> None:
    config = parse_config(minimal(), environ={})
    assert config.browser == BrowserConfig()
    assert config.browser.cookie_sessions is True
    assert config.browser.insecure_loopback is False
    assert config.browser.cookie_name == "gateway"


def test_shipped_config_switches_cookie_sessions_by_environment() -> None:
    environ = {"JWT_SECRET": "s" * 40}
    shipped = load_config(REPO / "config.yaml", environ=environ)
    assert shipped.browser.cookie_sessions and shipped.browser.insecure_loopback
    off = load_config(
        REPO / "config.yaml",
        environ={**environ, "COOKIE_SESSIONS": "false", "COOKIE_INSECURE_LOOPBACK": "false"},
    )
    assert not off.browser.cookie_sessions and not off.browser.insecure_loopback
    trusted = load_config(
        REPO / "config.yaml",
        environ={**environ, "TRUSTED_ORIGINS": "https://a.example, https://b.example:8443"},
    )
    assert trusted.browser.trusted_origins == {"https://a.example", "https://b.example:8443"}


def test_bad_browser_settings_are_all_reported() -> None:
    problems = problems_of(
        minimal(
            browser={
                "cookie_name": "my cookie",
                "trusted_origins": ["https://ok.example", "*", "https://x.example/path"],
                "insecure_loopback": "sometimes",
                "colour": "blue",
            }
        )
    )
    not_an_origin = "is not an origin like https://app.example (no path, no '*')"
    assert problems == [
        "c.yaml: browser.insecure_loopback: expected true or false, got 'sometimes'",
        "c.yaml: browser.colour: unknown key",
        "c.yaml: browser.cookie_name: use 1-32 letters, digits, '-' or '_'",
        f"c.yaml: browser.trusted_origins: '*' {not_an_origin}",
        f"c.yaml: browser.trusted_origins: 'https://x.example/path' {not_an_origin}",
    ]


def test_the_logo_is_read_into_a_data_url(tmp_path: Path) -> None:
    (tmp_path / "logo.png").write_bytes(PIXEL)
    (tmp_path / "c.yaml").write_text(
        "tokens: {secret: '" + "s" * 40 + "'}\n"
        "upstreams: {demo: {url: 'http://127.0.0.1:3000'}}\n"
        "routes: []\n"
        "browser: {logo: logo.png, title: Grafana}\n"
    )
    config = load_config(tmp_path / "c.yaml", environ={})
    assert config.browser.title == "Grafana"
    assert config.browser.logo_data_url == (
        "data:image/png;base64," + base64.b64encode(PIXEL).decode()
    )
    assert "base64" not in repr(config.browser)  # kept out of logs and reprs


def test_a_bad_logo_is_named(tmp_path: Path) -> None:
    (tmp_path / "big.svg").write_bytes(b"<svg/>" * 20000)
    (tmp_path / "logo.bmp").write_bytes(b"BM")
    for logo, message in [
        ("missing.png", f"cannot read {tmp_path / 'missing.png'}: No such file or directory"),
        ("big.svg", "big.svg is 120000 bytes; the limit is 65536"),
        ("logo.bmp", "logo.bmp: use a .gif, .jpeg, .jpg, .png, .svg, .webp file"),
    ]:
        problems = problems_of(minimal(browser={"logo": str(tmp_path / logo)}))
        assert problems == [f"c.yaml: browser.logo: {message}"], logo
