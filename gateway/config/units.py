"""Scalar units in the config file: durations (``30s``, ``1h30m``) and sizes (``64MiB``).

Both raise ``ValueError`` with a message that can follow a YAML path (``tokens.access_ttl: ...``).
"""

from __future__ import annotations

import re

__all__ = ["parse_duration", "parse_size"]

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION = re.compile(f"(?:{_DURATION_PART.pattern})+")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}


def parse_duration(value: object) -> float:
    """'30m', '7d', '1h30m', '500ms', '15s', or a number of seconds."""
    # YAML reads `yes` as True, and True is an int: refuse it rather than mean one second.
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 15m, 7d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        elif text and _DURATION.fullmatch(text):
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise ValueError(f"{value!r} is not a duration like 30s, 15m, 7d or 1h30m")
    else:
        raise ValueError("expected a duration like 30s, 15m, 7d")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def parse_size(value: object) -> int:
    """'64MiB', '1GiB', '512KB', '100' (bytes)."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 64MiB")
    if isinstance(value, int):
        number, unit = value, "b"
    else:
        match = _SIZE.fullmatch(str(value).strip())
        if match is None:
            raise ValueError(f"{value!r} is not a size like 512KiB, 64MiB or 1GiB")
        number, unit = int(match.group(1)), (match.group(2) or "b").lower()
    if number < 0:
        raise ValueError("must not be negative")
    return number * _SIZE_UNITS[unit]
