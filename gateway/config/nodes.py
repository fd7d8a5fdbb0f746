"""The walker over the parsed YAML document: typed getters that record problems under YAML paths.

A ``Node`` is one mapping being read. Each getter takes the key and the default, records a
problem (``server.port: expected a whole number, got 'eighty'``) instead of raising, and returns
the default so reading goes on; ``close()`` reports the keys nobody asked for. All nodes of one
document share one ``Problems``, so every problem is reported at once.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any, TypeVar

from .units import parse_duration, parse_size

__all__ = ["Node", "Problems", "join"]

_WHOLE_NUMBER = re.compile(r"-?\d+")
_MISSING: Any = object()
_Amount = TypeVar("_Amount", int, float)


def join(where: str, key: str) -> str:
    """The YAML path of `key` inside the mapping at `where`."""
    if not key:
        return where
    return f"{where}.{key}" if where else key


class Problems:
    """Every problem found in one document, in the order found, each as ``path: message``.

    Each problem is reported once: the same line twice is kept once, and once a value is
    reported as unusable (settle()), what follows from it at or below its path is not reported
    again (an unset ${VAR} is not also "is required"; a section that is not a mapping does not
    also lack its keys).
    """

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._settled: list[str] = []

    def add(self, where: str, message: str, *, about_the_key: bool = False) -> None:
        """Record a problem; `about_the_key`: with the key itself (unknown), so its value having
        been reported already does not make it a consequence."""
        if not about_the_key and any(_within(where, settled) for settled in self._settled):
            return
        line = f"{where or 'config'}: {message}"
        if line not in self.messages:
            self.messages.append(line)

    def settle(self, where: str) -> None:
        """The value at `where` is reported; record nothing more at or below it."""
        self._settled.append(where)

    def __bool__(self) -> bool:
        return bool(self.messages)


def _within(where: str, ancestor: str) -> bool:
    return where == ancestor or where.startswith((ancestor + ".", ancestor + "["))


class Node:
    """A mapping being read: typed getters that record problems under YAML paths."""

    def __init__(self, value: object, where: str, problems: Problems) -> None:
        self.where, self.problems = where, problems
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.problem("", "must be a mapping")
            problems.settle(where)
            value = {}
        self.value: dict[str, Any] = value
        self.seen: set[str] = set()

    def problem(self, key: str, message: str) -> None:
        """Record a problem with a key of this mapping."""
        self.problem_at(join(self.where, key), message)

    def problem_at(self, where: str, message: str) -> None:
        """Record a problem at an absolute YAML path (as items() returns)."""
        self.problems.add(where, message)

    def keys(self) -> list[str]:
        self.seen.update(self.value)
        return [str(k) for k in self.value]

    def _get(self, key: str) -> Any:
        self.seen.add(key)
        return self.value.get(key, _MISSING)

    def text(self, key: str, default: str, *, required: bool = False) -> str:
        value = self._get(key)
        if value is _MISSING or value is None or value == "":
            if required:
                self.problem(key, "is required")
            return default
        if isinstance(value, bool | dict | list):
            self.problem(key, f"expected a string, got {type(value).__name__}")
            return default
        return str(value)

    def integer(self, key: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self._get(key)
        if value is _MISSING or value == "":
            return default
        try:
            if isinstance(value, bool) or not _WHOLE_NUMBER.fullmatch(str(value).strip()):
                raise ValueError
            # int() refuses more than 4300 digits with a ValueError too.
            number = int(str(value).strip())
        except ValueError:
            self.problem(key, f"expected a whole number, got {value!r}")
            return default
        if not minimum <= number <= maximum:
            self.problem(key, f"{number} is outside {minimum}..{maximum}")
            return default
        return number

    def duration(
        self, key: str, default: float, *, minimum: float, maximum: float | None = None
    ) -> float:
        return self._measure(key, default, parse_duration, minimum, maximum, "{:g}s", "")

    def size(self, key: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        return self._measure(key, default, parse_size, minimum, maximum, "{}", " bytes")

    def _measure(
        self,
        key: str,
        default: _Amount,
        parse: Callable[[Any], _Amount],
        minimum: _Amount,
        maximum: _Amount | None,
        bound_format: str,
        unit: str,
    ) -> _Amount:
        """A duration or a size: parsed by `parse`, kept within minimum..maximum."""
        value = self._get(key)
        if value is _MISSING or value == "":
            return default
        try:
            amount = parse(value)
        except ValueError as exc:
            self.problem(key, str(exc))
            return default
        if amount < minimum or (maximum is not None and amount > maximum):
            bound = "at least " + bound_format.format(minimum)
            if maximum:
                bound += " and at most " + bound_format.format(maximum)
            self.problem(key, f"{value!r} must be {bound}{unit}")
            return default
        return amount

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is _MISSING or value == "":
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        self.problem(key, f"expected true or false, got {value!r}")
        return default

    def child(self, key: str) -> Node:
        """The mapping under `key` (an empty one when the key is absent)."""
        value = self._get(key)
        return Node(None if value is _MISSING else value, join(self.where, key), self.problems)

    def node_at(self, where: str, value: object) -> Node:
        """A mapping found elsewhere in the document (a list item), sharing these problems."""
        return Node(value, where, self.problems)

    def items(self, key: str) -> list[tuple[str, Any]]:
        """The list under `key` as (YAML path, item) pairs; a string is split on commas (so one
        environment variable can hold a list)."""
        value = self._get(key)
        if value is _MISSING or value is None or value == "":
            return []
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            self.problem(key, "expected a list")
            return []
        return [(f"{join(self.where, key)}[{i}]", v) for i, v in enumerate(value)]

    def given(self, key: str) -> bool:
        """True when the mapping has `key` at all (an explicit empty list included)."""
        return key in self.value

    def close(self) -> None:
        """Report every key of this mapping that no getter asked for, with the nearest key
        that was asked for (a typo is the usual reason)."""
        for key in self.value:
            if key not in self.seen:
                message = "unknown key" + _did_you_mean(str(key), self.seen)
                self.problems.add(join(self.where, str(key)), message, about_the_key=True)


def _did_you_mean(key: str, known: set[str]) -> str:
    nearest = difflib.get_close_matches(key, known, n=1)
    return f"; did you mean {nearest[0]!r}?" if nearest else ""
