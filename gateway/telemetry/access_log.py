"""One access-log line per request: who, what route, what status, how long, for which user, and
for a client that went away (status 499) how far the request had got.
Never a query string (it may carry tokens), never a header value.

The middleware and the lane write the line of every request they answered, aborted ones included
(aiohttp logs nothing for a handler that was cancelled); `AccessLogger`, aiohttp's hook, writes
only the lines of requests that never reached the app (aiohttp's parser refused them). A line's
fields are queued with the process's `LogOutput` and formatted when their batch is written, in
the shape `JsonFormatter` or the text format give a record: no `LogRecord`, and no write per line.
Without a `LogOutput` (the gateway run inside another program, tests) lines are `logging` records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii as _str
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..request_keys import CLIENT, REQUEST_ID, ROUTE_NAME, STARTED, UPSTREAM_NAME, USER_ID, learned
from .logs import LogOutput
from .redaction import loggable_path, printable

__all__ = ["AccessLog", "AccessLogger"]

_NAME = "aiohttp.access"  # the logger name access lines have always carried
# (millis, client, method, path, status, ms, request id, route, upstream, user id, aborted)
_Fields = tuple[
    int, str, str, str, int, float, str | None, str | None, str | None, str | None, str | None
]


class AccessLog:
    """The access log of one app: `open` at start-up, `write` per request, `flush` at the end."""

    def __init__(self, *, enabled: bool = True) -> None:
        self._wanted = enabled
        self._logger = logging.getLogger(_NAME)
        self._output: LogOutput | None = None
        self._on = False
        self._second = -1
        self._stamp = ""

    def open(self) -> None:
        """Write to the process's log output if there is one; the log level (info) and the
        config decide once whether there are access lines at all."""
        self._output = LogOutput.installed()
        if self._output is not None:
            self._on = self._wanted and self._logger.isEnabledFor(logging.INFO)
            if self._on:
                self._output.start()

    def flush(self) -> None:
        """Write every line waiting (at shutdown: each answered request is on disk)."""
        if self._output is not None:
            self._output.flush()

    async def cleanup_ctx(self, _app: web.Application) -> AsyncIterator[None]:
        """For `app.cleanup_ctx`: open at start-up, flush after the last request."""
        self.open()
        yield
        self.flush()

    def write(
        self, request: web.BaseRequest, status: int, seconds: float, aborted: str | None = None
    ) -> None:
        """The line of one request; `aborted` says how far it got when the client went away."""
        output = self._output
        if output is None:
            if self._wanted and self._logger.isEnabledFor(logging.INFO):
                self._record(request, status, seconds, aborted)
            return
        if not self._on:
            return
        known = learned(request)
        get = known.get
        # The fields now, the line when the batch is written (formatted together, the lines
        # cost less than one at a time between requests).
        output.append_later(
            self._json_line if output.json_lines else self._text_line,
            (
                int(time.time() * 1000),
                _client(known, request),
                request.method,
                loggable_path(request),
                status,
                seconds * 1000,
                get(REQUEST_ID),
                get(ROUTE_NAME),
                get(UPSTREAM_NAME),
                get(USER_ID),
                aborted,
            ),
        )

    def _json_line(self, fields: _Fields) -> str:
        millis, client, method, path, status, ms, request_id, route, upstream, user, aborted = (
            fields
        )
        if millis // 1000 != self._second:
            self._new_second(millis // 1000, json_lines=True)
        # The fields JsonFormatter writes, in its order, escaped as json.dumps escapes them.
        # ({ms:.2f} is the float round(ms, 2) that json.dumps wrote, perhaps with a trailing 0.)
        # The client and path are printable ASCII (redaction.printable): escaped, they would
        # only gain a backslash before each quote and backslash, which _str adds once, here.
        # The method is an HTTP token and `aborted` one of request_keys' words: nothing to escape.
        client, path = _str(client), _str(path)
        tail = "}" if aborted is None else f', "aborted": "{aborted}"}}'
        abort_note = "" if aborted is None else f" aborted={aborted}"
        return (
            f'{{"time": "{self._stamp}{_ISO_MILLIS[millis % 1000]}", "level": "info", '
            f'"logger": "{_NAME}", "message": "{client[1:-1]} {method} {path[1:-1]} {status} '
            f'{ms:.1f}ms{abort_note}", '
            f'"request_id": {_json(request_id)}, "client": {client}, '
            f'"method": "{method}", "route": {_json(route)}, '
            f'"path": {path}, "status": {status}, '
            f'"upstream": {_json(upstream)}, "duration_ms": {ms:.2f}, '
            f'"user_id": {_json(user)}{tail}'
        )

    def _text_line(self, fields: _Fields) -> str:
        millis, client, method, path, status, ms, *_, aborted = fields
        if millis // 1000 != self._second:
            self._new_second(millis // 1000, json_lines=False)
        message = f"{client} {method} {path} {status} {ms:.1f}ms"
        if aborted is not None:
            message = f"{message} aborted={aborted}"
        return f"{self._stamp}{_TEXT_MILLIS[millis % 1000]} INFO {_NAME}: {message}"

    def _record(
        self, request: web.BaseRequest, status: int, seconds: float, aborted: str | None
    ) -> None:
        """The line as a `logging` record, for whatever handlers the host program installed."""
        known = learned(request)
        client = _client(known, request)
        path = loggable_path(request)
        ms = seconds * 1000
        extra: dict[str, object] = {
            "request_id": known.get(REQUEST_ID),
            "client": client,
            "method": request.method,
            "route": known.get(ROUTE_NAME),
            "path": path,
            "status": status,
            "upstream": known.get(UPSTREAM_NAME),
            "duration_ms": round(ms, 2),
            "user_id": known.get(USER_ID),
        }
        if aborted is not None:
            extra["aborted"] = aborted
        self._logger.info(
            "%s %s %s %d %.1fms%s",
            client,
            request.method,
            path,
            status,
            ms,
            "" if aborted is None else f" aborted={aborted}",
            extra=extra,
        )

    def _new_second(self, second: int, *, json_lines: bool) -> None:
        # The time as JsonFormatter (UTC, ISO 8601) or logging's asctime (local time) write
        # it: down to the second formatted once a second, the milliseconds from a table.
        self._second = second
        if json_lines:
            self._stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        else:
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))


_ISO_MILLIS = tuple(f".{ms:03d}+00:00" for ms in range(1000))
_TEXT_MILLIS = tuple(f",{ms:03d}" for ms in range(1000))


def _client(known: Mapping[Any, Any], request: web.BaseRequest) -> str:
    # From X-Forwarded-For behind trusted proxies: any text a header can hold.
    return printable(known.get(CLIENT) or request.remote or "-")


def _json(value: str | None) -> str:
    return "null" if value is None else _str(value)


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access-log hook. The middleware has written the line of every request that
    reached the app; this writes the line of one that did not (refused by aiohttp's parser)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if STARTED in learned(request):
            return
        access_log = AccessLog()  # rare: a request the app never saw
        access_log.open()
        access_log.write(request, response.status, time)
