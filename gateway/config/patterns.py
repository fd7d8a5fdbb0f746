"""Route path patterns: parsing, matching and the specificity order that picks one route.

Syntax (see README, "Routes"):
- ``/aaa``      exact: only ``/aaa``.
- ``/users/*``  ``*`` matches within one segment and never crosses ``/``.
- ``/echo/**``  prefix: ``/echo`` itself and everything below it (``/echo/x/y``), never ``/echoes``.
Matching is case-sensitive and runs on the normalized path (see ``gateway.paths``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["PathPattern", "PatternError", "patterns_overlap"]

# Characters a pattern segment may hold: RFC 3986 pchar minus percent-escapes, plus the glob star.
_SEGMENT_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()+,=:@*]*")
_LITERAL, _GLOB = 3, 2
_PREFIX_TAIL, _END = (1, 0), (9, 0)


class PatternError(ValueError):
    """A pattern that cannot be compiled; the message says why."""


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A compiled route pattern."""

    text: str
    segments: tuple[str, ...]
    is_prefix: bool
    regex: re.Pattern[str] = field(compare=False, repr=False)
    specificity: tuple[tuple[int, int], ...] = field(compare=False, repr=False)

    @property
    def is_exact(self) -> bool:
        return not self.is_prefix and not any("*" in s for s in self.segments)

    @classmethod
    def parse(cls, text: str) -> PathPattern:
        if not text.startswith("/"):
            raise PatternError("must start with '/'")
        body = text[1:]
        parts = body.split("/") if body else []
        is_prefix = bool(parts) and parts[-1] == "**"
        if is_prefix:
            parts = parts[:-1]
        for part in parts:
            if part == "":
                raise PatternError(
                    "empty segment ('//' or a trailing '/'); write /path or /path/**"
                )
            if part == "**":
                raise PatternError("'**' is allowed only as the last segment")
            if part in (".", ".."):
                raise PatternError("dot segments are not allowed")
            if not _SEGMENT_CHARS.fullmatch(part):
                raise PatternError(
                    f"segment {part!r} has characters outside letters, digits and -._~!$&'()+,=:@*"
                )
        regex_parts = [_segment_regex(p) for p in parts]
        source = "".join("/" + r for r in regex_parts)
        if is_prefix:
            source += "(?:/.*)?"
        elif not parts:
            source = "/"
        specificity = tuple(_segment_rank(p) for p in parts) + (
            (_PREFIX_TAIL,) if is_prefix else (_END,)
        )
        return cls(
            text=text,
            segments=tuple(parts),
            is_prefix=is_prefix,
            regex=re.compile(source, re.DOTALL),
            specificity=specificity,
        )

    def matches(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None


def _segment_regex(segment: str) -> str:
    if segment == "*":
        return "[^/]+"
    return "[^/]*".join(re.escape(piece) for piece in segment.split("*"))


def _segment_rank(segment: str) -> tuple[int, int]:
    if "*" not in segment:
        return (_LITERAL, len(segment))
    return (_GLOB, len(segment.replace("*", "")))


def _segments_overlap(a: str, b: str) -> bool:
    """Whether some single path segment could match both (conservative: True when unsure)."""
    if "*" not in a and "*" not in b:
        return a == b
    if "*" not in a:
        return re.fullmatch(_segment_regex(b), a) is not None
    if "*" not in b:
        return re.fullmatch(_segment_regex(a), b) is not None
    head_a, head_b = a.split("*", 1)[0], b.split("*", 1)[0]
    tail_a, tail_b = a.rsplit("*", 1)[1], b.rsplit("*", 1)[1]
    heads_fit = head_a.startswith(head_b) or head_b.startswith(head_a)
    tails_fit = tail_a.endswith(tail_b) or tail_b.endswith(tail_a)
    return heads_fit and tails_fit


def patterns_overlap(a: PathPattern, b: PathPattern) -> bool:
    """Whether two patterns of equal specificity could both match one path."""
    if a.is_prefix != b.is_prefix or len(a.segments) != len(b.segments):
        return False
    return all(_segments_overlap(x, y) for x, y in zip(a.segments, b.segments, strict=True))
