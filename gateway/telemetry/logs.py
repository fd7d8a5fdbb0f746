"""Log output: JSON lines for log shippers or plain text for a terminal, with the redactions of
`redaction` always installed, written to stderr by one `LogOutput` per process.

Records from `logging` (warnings, errors, start and stop: a few per minute) are written at once.
Access-log lines, one per request, are appended to a buffer from the event loop, and a writer
thread sends what is waiting to stderr in one `os.write` every 50 ms, or as soon as 256 lines wait;
`flush()` (on shutdown, and at exit through `logging.shutdown`) writes whatever is left. A record
is written after every line appended before it, so the order of the output is the order of events.
"""

from __future__ import annotations

import json
import logging
import os
import select
import sys
import threading
from collections import deque
from datetime import UTC, datetime

from .redaction import install_log_redaction

__all__ = ["LogOutput", "configure_logging"]

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
        # deque.append and popleft are atomic: the event loop appends without a lock.
        self._lines: deque[str] = deque()
        self._writing = threading.Lock()  # one writer at a time, so batches stay in order
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None
        self._closed = False

    @classmethod
    def installed(cls) -> LogOutput | None:
        """The output `configure_logging` installed on the root logger, if any."""
        for handler in logging.getLogger().handlers:
            if isinstance(handler, cls):
                return handler
        return None

    def start(self) -> None:
        """Start the writer thread that `append`'s lines wait for (once)."""
        with self._writing:
            if self._writer is None and not self._closed:
                self._writer = threading.Thread(target=self._run, name="log-output", daemon=True)
                self._writer.start()

    def append(self, line: str) -> None:
        """Queue one line (without its newline) for the writer thread: the hot path."""
        lines = self._lines
        lines.append(line)
        if len(lines) == self._batch:
            self._wake.set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)
        self.flush()

    def flush(self) -> None:
        """Write every line waiting, now."""
        with self._writing:
            lines = self._lines
            if not lines:
                return
            batch = [lines.popleft() for _ in range(len(lines))]
            batch.append("")
            self._write("\n".join(batch).encode("utf-8", "backslashreplace"))

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join(timeout=5)
        self.flush()
        super().close()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._interval)
            self._wake.clear()
            self.flush()

    def _write(self, data: bytes) -> None:
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
