"""The gateway's own HTML pages: the login form and the logout confirmation.

Plain HTML and one inline style sheet (allowed by its hash), no script and no external asset, so
the Content-Security-Policy can forbid everything else; the pages work without JavaScript.
Accessible: every field has a label, the first field to fix has the focus, and an error is a
`role="alert"` element the fields point at with `aria-describedby`. Every value is escaped.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape

from aiohttp import web

from ..config import BrowserConfig

__all__ = ["PageStyle", "login_page", "logout_page"]

PRODUCT = "auth-gateway"

_STYLE = """
:root { color-scheme: light dark; --bg: #f3f4f6; --card: #fff; --text: #1b1f24;
  --muted: #57606a; --border: #c4cbd3; --accent: #1f5fbf; --on-accent: #fff;
  --error-bg: #fdecea; --error: #9b1c1c; --notice-bg: #e8f1fd; --focus: #1f5fbf; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #0f1216; --card: #1a1f26; --text: #e6edf3; --muted: #9aa5b1;
    --border: #3d4650; --accent: #6ea2ff; --on-accent: #0b0d10; --error-bg: #3b1416;
    --error: #ffb4ae; --notice-bg: #14263f; --focus: #8ab4ff; }
}
* { box-sizing: border-box; }
html, body { margin: 0; min-height: 100%; }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  background: var(--bg); color: var(--text); display: flex; min-height: 100vh;
  align-items: center; justify-content: center; padding: 1rem; }
main { width: 100%; max-width: 25rem; }
.card { background: var(--card); border: 1px solid var(--border); border-radius: 12px;
  padding: 2rem 1.75rem 1.75rem; box-shadow: 0 2px 10px rgb(0 0 0 / 6%); }
.logo { display: block; max-height: 56px; max-width: 100%; margin: 0 auto 1rem; }
h1 { font-size: 1.4rem; line-height: 1.3; margin: 0 0 1.25rem; text-align: center;
  font-weight: 650; }
.field { margin-bottom: 1rem; }
label { display: block; font-weight: 600; margin-bottom: 0.3rem; }
input { width: 100%; font: inherit; padding: 0.6rem 0.75rem; color: var(--text);
  background: var(--card); border: 1px solid var(--border); border-radius: 8px; }
input[aria-invalid="true"] { border-color: var(--error); }
button { width: 100%; font: inherit; font-weight: 600; padding: 0.65rem; margin-top: 0.5rem;
  border: 0; border-radius: 8px; background: var(--accent); color: var(--on-accent);
  cursor: pointer; }
button:hover { filter: brightness(1.1); }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
.error, .notice { border-radius: 8px; padding: 0.6rem 0.75rem; margin: 0 0 1rem; }
.error { background: var(--error-bg); color: var(--error); font-weight: 600; }
.notice { background: var(--notice-bg); }
.secondary { display: block; text-align: center; margin-top: 1rem; color: var(--accent); }
.product { text-align: center; color: var(--muted); font-size: 0.85rem; margin: 1rem 0 0; }
""".strip()
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()


@dataclass(frozen=True, slots=True)
class PageStyle:
    """What every page shares: the name and logo from config, and the security headers."""

    title: str
    logo_data_url: str
    headers: dict[str, str]

    @classmethod
    def build(cls, config: BrowserConfig, form_targets: Iterable[str]) -> PageStyle:
        """`form_targets`: origins besides this one a login may return to (a form's redirect
        is subject to form-action too)."""
        targets = " ".join(["'self'", *sorted(form_targets)])
        policy = (
            f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src data:; "
            f"form-action {targets}; frame-ancestors 'none'; base-uri 'none'"
        )
        return cls(
            title=config.title,
            logo_data_url=config.logo_data_url,
            headers={
                "Content-Security-Policy": policy,
                "Cache-Control": "no-store",
                "X-Frame-Options": "DENY",
                "X-Content-Type-Options": "nosniff",
                # Not no-referrer: under it a same-origin form POST says `Origin: null`.
                "Referrer-Policy": "same-origin",
            },
        )

    def response(
        self, body: str, *, status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.Response(
            text=body,
            status=status,
            content_type="text/html",
            charset="utf-8",
            headers={**self.headers, **(headers or {})},
        )

    def document(self, heading: str, content: str) -> str:
        name = self.title or PRODUCT
        logo = (
            f'<img class="logo" src="{escape(self.logo_data_url)}" alt="">'
            if self.logo_data_url
            else ""
        )
        footer = f'<p class="product">Protected by {PRODUCT}</p>' if self.title else ""
        return (
            '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(heading)} · {escape(name)}</title>\n"
            # An empty icon, so the browser asks for no /favicon.ico.
            '<link rel="icon" href="data:,">\n'
            f"<style>{_STYLE}</style>\n</head>\n<body>\n<main>\n"
            f'<div class="card">\n{logo}{content}</div>\n{footer}\n</main>\n</body>\n</html>\n'
        )


def login_page(
    style: PageStyle,
    *,
    action: str,
    csrf: str,
    return_to: str,
    username: str = "",
    error: str = "",
    notice: str = "",
) -> str:
    """The login form; with `error`, the username kept and the password field focused."""
    heading = f"Sign in to {style.title}" if style.title else "Sign in"
    alert = f'<p id="login-error" class="error" role="alert">{escape(error)}</p>\n' if error else ""
    status = f'<p class="notice" role="status">{escape(notice)}</p>\n' if notice else ""
    invalid = ' aria-invalid="true" aria-describedby="login-error"' if error else ""
    user_focus, password_focus = ("", " autofocus") if error and username else (" autofocus", "")
    content = (
        f"<h1>{escape(heading)}</h1>\n{status}{alert}"
        f'<form method="post" action="{escape(action)}">\n'
        f'<input type="hidden" name="csrf" value="{escape(csrf)}">\n'
        f'<input type="hidden" name="rd" value="{escape(return_to)}">\n'
        '<div class="field"><label for="username">User name</label>\n'
        f'<input id="username" name="username" value="{escape(username)}" required '
        'maxlength="256" autocomplete="username" autocapitalize="none" spellcheck="false"'
        f"{invalid}{user_focus}></div>\n"
        '<div class="field"><label for="password">Password</label>\n'
        '<input id="password" name="password" type="password" required maxlength="1024" '
        f'autocomplete="current-password"{invalid}{password_focus}></div>\n'
        '<button type="submit">Sign in</button>\n</form>\n'
    )
    return style.document(heading, content)


def logout_page(style: PageStyle, *, action: str) -> str:
    """Asks before logging out: a GET must never end a session (links are prefetched)."""
    name = style.title or PRODUCT
    heading = f"Log out of {name}?"
    content = (
        f"<h1>{escape(heading)}</h1>\n"
        f'<form method="post" action="{escape(action)}">\n'
        '<button type="submit" autofocus>Log out</button>\n</form>\n'
        '<a class="secondary" href="/">Cancel</a>\n'
    )
    return style.document("Log out", content)
