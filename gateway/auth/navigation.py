"""Telling a browser's top-level navigation from everything else (fetch, XHR, curl, API clients).

Only a navigation is answered with a redirect to the login page; everything else gets the JSON
401 it can act on, never a 302 an XHR would follow silently into an HTML login page.

- With Fetch Metadata (every current browser): `Sec-Fetch-Mode: navigate` and
  `Sec-Fetch-Dest: document` (a frame gets the 401: the login page refuses to be framed).
- Without it (older browsers): a GET or HEAD whose `Accept` names HTML, with no
  `X-Requested-With` (jQuery and friends) and a browser's `User-Agent` ("Mozilla/..."). curl and
  API clients send none of these; `fetch()` sends `Accept: */*`, which does not name HTML.
"""

from __future__ import annotations

from aiohttp import web

__all__ = ["accepts_html", "is_navigation", "wants_login_redirect"]

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


def is_navigation(request: web.BaseRequest) -> bool:
    """Whether the request is a browser loading a page into its window (any method)."""
    headers = request.headers
    mode = headers.get("Sec-Fetch-Mode")
    if mode is not None:
        return mode == "navigate" and headers.get("Sec-Fetch-Dest", "document") == "document"
    # The cheap tests first: most requests that are no navigation fail one of them.
    return (
        request.method in ("GET", "HEAD")
        and "X-Requested-With" not in headers
        and headers.get("User-Agent", "").startswith("Mozilla/")
        and accepts_html(headers.get("Accept", ""))
    )


def wants_login_redirect(request: web.BaseRequest) -> bool:
    """A navigation that a redirect to the login page can serve: GET or HEAD (a form POST
    without a session would lose its body on the way)."""
    return request.method in ("GET", "HEAD") and is_navigation(request)


def accepts_html(accept: str) -> bool:
    """Whether an Accept header names HTML with a non-zero quality (`*/*` does not count)."""
    for item in accept.split(","):
        media, *parameters = (part.strip() for part in item.split(";"))
        if media.lower() not in _HTML_TYPES:
            continue
        quality = next((p[2:] for p in parameters if p.lower().startswith("q=")), "1")
        try:
            if float(quality) > 0:
                return True
        except ValueError:
            continue
    return False
