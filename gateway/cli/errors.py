"""The CLI's own failure: a message for one line on stderr, never a traceback."""

from __future__ import annotations

__all__ = ["CommandError"]


class CommandError(Exception):
    """A failure to report in one line, without a traceback."""
