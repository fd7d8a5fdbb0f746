"""Log output: JSON lines for log shippers or plain text for a terminal, with the redactions of
`redaction` always installed, written to stderr by one `LogOutput` per process.

Records from `logging` (warnings, errors, start and stop: a few per minute) are written at once.
Access-log lines, one per request, are appended to a buffer from the event loop, which writes
what is waiting in one `os.write` as soon as 256 lines wait, or 50 ms after the first. A full
pipe or socket never blocks it: what it did not take waits, batch by batch, for it to drain (in
memory, however long the reader stalls: no line is dropped). A file or terminal is written as it
is, as the page cache and a terminal take it. `flush()` (on shutdown, and at
exit through `logging.shutdown`) writes whatever is left. A record is written after every line
appended before it, so the order of the output is the order of events. (A writer thread did the
writing before: measured, the GIL passing between it and the loop cost about 5 us of system and
3 us of user time per request, more than the lines themselves.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import socket
import stat
import sys
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from .redaction import install_log_redaction

__all__ = ["LogOutput", "configure_logging"]

_T = TypeVar("_T")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Extra fields an access-log record carries (see access_log.AccessLog).
ACCESS_FIELDS = (
    "request_id",
    "client",
    "method",
    "route",
    "path",
    "status",
    "upstream",
    "duration_ms",
    "user_id",
    "aborted",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and access fields if present."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in ACCESS_FIELDS:
            if field in record.__dict__:
                entry[field] = record.__dict__[field]
        # The gateway.audit stream's records carry their event as one object.
        if "audit" in record.__dict__:
            entry["audit"] = record.__dict__["audit"]
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True)


class LogOutput(logging.Handler):
    """The process's log output: lines to a file descriptor, from any thread, in order."""

    def __init__(
        self, fd: int, *, json_lines: bool, interval: float = 0.05, batch: int = 256
    ) -> None:
        super().__init__()
        self.fd = fd
        # The format of access lines that `append` is given (access_log.AccessLog writes them).
        self.json_lines = json_lines
        self.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT_FORMAT))
        self._interval = interval
        self._batch = batch
        # deque.append and popleft are atomic: the event loop appends without a lock while a
        # record from another thread may be taking the lines.
        # A line, or what makes it: (render, fields).
        self._lines: deque[str | tuple[Callable[[Any], str], Any]] = deque()
        self._writing = threading.Lock()  # one writer at a time, so batches stay in order
        # Set by `start`: the loop that writes the batches, and its way to write without
        # blocking; batches a full pipe did not take wait in `_pending`, in order, for it to
        # drain (each kept as it came: a stalled reader costs no copying of the backlog).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: _NonBlockingWriter | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pending: deque[memoryview] = deque()
        self._watching = False

    @classmethod
    def installed(cls) -> LogOutput | None:
        """The output `configure_logging` installed on the root logger, if any."""
        for handler in logging.getLogger().handlers:
            if isinstance(handler, cls):
                return handler
        return None

    def start(self) -> None:
        """Have the running event loop write `append`'s lines in batches (without one, they
        are written a whole batch at a time, and by `flush`)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if loop is not self._loop:  # the first loop, or a new one (an app started again)
            if self._writer is not None:
                self.flush()
                self._stop_watching()
                self._writer.close()
            self._timer = None
            self._loop, self._writer = loop, _NonBlockingWriter(self.fd)

    def append(self, line: str) -> None:
        """Queue one line (without its newline) for the next batch."""
        self._queued(line)

    def append_later(self, render: Callable[[_T], str], fields: _T) -> None:
        """Queue the line `render(fields)` will make when the batch is written: the hot path
        (an access line's fields cost a tuple; formatted in a batch, they cost less)."""
        self._queued((render, fields))

    def _queued(self, line: str | tuple[Callable[[Any], str], Any]) -> None:
        lines = self._lines
        lines.append(line)
        if len(lines) >= self._batch:
            self._write_batch()
        elif self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(self._interval, self._write_batch)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)
        self.flush()

    def flush(self) -> None:
        """Write every line waiting, now (blocking, from any thread)."""
        with self._writing:
            self._write_pending()
            data = self._taken()
            if data:
                self._write(data)

    def close(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self.flush()
        if self._writer is not None:
            self._stop_watching()
            self._writer.close()
        super().close()

    def _taken(self) -> bytes:
        lines = self._lines
        queued = [lines.popleft() for _ in range(len(lines))]
        if not queued:
            return b""
        batch = [line if isinstance(line, str) else line[0](line[1]) for line in queued]
        batch.append("")
        return "\n".join(batch).encode("utf-8", "backslashreplace")

    def _write_batch(self) -> None:
        """On the loop: one write of what is waiting, never blocking it (a full pipe's rest
        is written when the pipe drains)."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        writer = self._writer
        if writer is None:
            self.flush()
            return
        with self._writing:
            data = memoryview(self._taken())
            if not data:  # flushed meanwhile
                return
            if self._watching:  # the pipe is full: after what waits already
                self._pending.append(data)
                return
            written = writer.write(data)
            if written < len(data):
                self._pending.append(data[written:])
                self._watch(writer)

    def _watch(self, writer: _NonBlockingWriter) -> None:
        assert self._loop is not None  # noqa: S101 - set with the writer
        try:
            self._loop.add_writer(writer.fd, self._drain)
        except (OSError, ValueError, RuntimeError):  # not pollable after all: block instead
            self._write_pending()
            return
        self._watching = True

    def _drain(self) -> None:
        with self._writing:
            pending, writer = self._pending, self._writer
            while pending and writer is not None:
                chunk = pending[0]
                written = writer.write(chunk)
                if written < len(chunk):
                    pending[0] = chunk[written:]
                    return
                pending.popleft()
            self._stop_watching()

    def _stop_watching(self) -> None:
        if self._watching and self._loop is not None and self._writer is not None:
            self._watching = False
            with contextlib.suppress(Exception):  # the loop may be closed by now
                self._loop.remove_writer(self._writer.fd)

    def _write_pending(self) -> None:
        pending = self._pending
        while pending:
            self._write(pending.popleft())

    def _write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view)
            except BlockingIOError:  # someone made stderr non-blocking: wait until it drains
                select.select([], [self.fd], [], 1.0)
                continue
            except OSError:
                return  # stderr is gone; there is no one left to tell
            view = view[written:]


class _NonBlockingWriter:
    """Writes to a log file descriptor without ever blocking the loop: a pipe (a container's
    log, a shell's `|`) through a non-blocking descriptor of its own (opened again, so the
    process's stderr stays as it is), a socket (journald) with MSG_DONTWAIT; a regular file
    or terminal as it is (the page cache takes it)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._socket: socket.socket | None = None
        self._own: int | None = None
        mode = os.fstat(fd).st_mode
        with contextlib.suppress(OSError):
            if stat.S_ISFIFO(mode):
                self.fd = self._own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK)
            elif stat.S_ISSOCK(mode):
                self._socket = socket.socket(fileno=os.dup(fd))

    def write(self, data: memoryview) -> int:
        """How much of `data` could be written now (all of it, unless a pipe is full)."""
        written = 0
        while written < len(data):
            try:
                if self._socket is not None:
                    written += self._socket.send(data[written:], socket.MSG_DONTWAIT)
                else:
                    written += os.write(self.fd, data[written:])
            except BlockingIOError:
                break
            except OSError:
                return len(data)  # the log's reader is gone; there is no one left to tell
        return written

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        if self._own is not None:
            os.close(self._own)


def configure_logging(format: str, level: str) -> None:
    """Send every log record to stderr in the chosen format (replacing earlier handlers)."""
    handler: logging.Handler
    try:
        handler = LogOutput(sys.stderr.fileno(), json_lines=format == "json")
    except (AttributeError, OSError, ValueError):  # stderr replaced by something without an fd
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT)
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, LogOutput):
            old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    install_log_redaction()
