"""Reading the `browser` section: its settings, their checks, and the login page's logo, read
from its file when the config is loaded (so `gateway check-config` reports a missing one)."""

from __future__ import annotations

import base64
import dataclasses
import re
from pathlib import Path

from .model import BrowserConfig
from .nodes import Node
from .sections import read_settings

__all__ = ["read_browser"]

MAX_LOGO_BYTES = 64 * 1024
_LOGO_TYPES = {
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
# Cookie names go into Set-Cookie as they are: a small, safe alphabet.
_COOKIE_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
_ORIGIN = re.compile(
    r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
)


def read_browser(node: Node, *, base_dir: Path) -> BrowserConfig:
    """The browser section, with every problem recorded on `node`."""
    browser = BrowserConfig(**read_settings(node, BrowserConfig))
    node.close()
    if not _COOKIE_NAME.fullmatch(browser.cookie_name):
        node.problem("cookie_name", "use 1-32 letters, digits, '-' or '_'")
    for origin in sorted(browser.trusted_origins):
        if not _ORIGIN.fullmatch(origin):
            node.problem(
                "trusted_origins",
                f"{origin!r} is not an origin like https://app.example (no path, no '*')",
            )
    if browser.logo:
        data_url = _read_logo(node, base_dir / browser.logo)
        browser = dataclasses.replace(browser, logo_data_url=data_url)
    return browser


def _read_logo(node: Node, path: Path) -> str:
    kind = _LOGO_TYPES.get(path.suffix.lower())
    if kind is None:
        node.problem("logo", f"{path.name}: use a {', '.join(sorted(_LOGO_TYPES))} file")
        return ""
    try:
        data = path.read_bytes()
    except OSError as exc:
        node.problem("logo", f"cannot read {path}: {exc.strerror}")
        return ""
    if len(data) > MAX_LOGO_BYTES:
        node.problem("logo", f"{path.name} is {len(data)} bytes; the limit is {MAX_LOGO_BYTES}")
        return ""
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"
