"""Keeping secrets and forged lines out of logs.

- `loggable_path`: the request path as received (still percent-encoded, no query string, which
  may carry a refresh token), with anything unprintable escaped, so a path cannot forge log lines.
- `ParseErrorRedactor`: aiohttp logs a malformed request with a traceback that quotes the
  offending line, which may hold an Authorization header or a token in a query string. The
  filter keeps the event and drops the quote, as a warning at most every few seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

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
    """Rewrites aiohttp's 'Error handling request' records without the request's text, demoted
    to a warning at most once per `interval` seconds: a client sending garbage must not write an
    ERROR line per request (the lines it caused meanwhile are counted in the next one)."""

    def __init__(self, *, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._next_at = 0.0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("Error handling request"):
            now = self._clock()
            if now < self._next_at:
                self._suppressed += 1
                return False
            self._next_at = now + self._interval
            error = record.exc_info[1] if record.exc_info else None
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "refused a malformed request from %s (%s)"
            record.args = (remote, type(error).__name__ if error else "unknown error")
            if self._suppressed:
                record.msg += "; %d more since the last such line"
                record.args = (*record.args, self._suppressed)
                self._suppressed = 0
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = None
            record.exc_text = None
        return True


def install_log_redaction() -> None:
    """Attach the redactor to aiohttp's server logger (process-wide, idempotent)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ParseErrorRedactor) for f in logger.filters):
        logger.addFilter(ParseErrorRedactor())
