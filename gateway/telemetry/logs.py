"""Log output: JSON lines for log shippers or plain text for a terminal, with the redactions of
`log_safety` always installed."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from .redaction import install_log_redaction

__all__ = ["configure_logging"]

# Extra fields an access-log record carries (see access_log.AccessLogger).
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
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True)


def configure_logging(format: str, level: str) -> None:
    """Send every log record to stderr in the chosen format (replacing earlier handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    if format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    install_log_redaction()
