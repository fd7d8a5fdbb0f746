"""Keeping secrets and forged lines out of logs.

- `loggable_path`: the request path as received (still percent-encoded, no query string, which
  may carry a refresh token), with anything unprintable escaped, so a path cannot forge log lines.
- `ParseErrorRedactor`: aiohttp logs a malformed request with a traceback that quotes the
  offending line, which may hold an Authorization header or a token in a query string. The
  filter keeps the event and drops the quote.
"""

from __future__ import annotations

import logging

from aiohttp import web

__all__ = ["ParseErrorRedactor", "install_log_redaction", "loggable_path", "printable"]


def loggable_path(request: web.BaseRequest) -> str:
    return printable(request.raw_path.partition("?")[0])


def printable(text: str) -> str:
    """`text` if it is printable ASCII, else with everything else escaped (no line breaks)."""
    if text.isprintable() and text.isascii():
        return text
    return text.encode("ascii", "backslashreplace").decode().encode("unicode_escape").decode()


class ParseErrorRedactor(logging.Filter):
    """Rewrites aiohttp's 'Error handling request' records without the request's text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Error handling request"):
            error = record.exc_info[1] if record.exc_info else None
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "refused a malformed request from %s (%s)"
            record.args = (remote, type(error).__name__ if error else "unknown error")
            record.exc_info = None
            record.exc_text = None
        return True


def install_log_redaction() -> None:
    """Attach the redactor to aiohttp's server logger (process-wide, idempotent)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ParseErrorRedactor) for f in logger.filters):
        logger.addFilter(ParseErrorRedactor())
