"""The route table, compiled once: most specific pattern wins, then the method decides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..config import RouteConfig
from ..config.patterns import PathPattern
from ..errors import MethodNotAllowed, NotFound, shown

__all__ = ["RouteTable"]

_REMEMBERED_PATHS = 4096
_REMEMBERED_PATH_LENGTH = 256


@dataclass(frozen=True, slots=True)
class _PatternGroup:
    """All routes sharing one pattern (their method sets are disjoint, checked at load)."""

    pattern: PathPattern
    routes: tuple[RouteConfig, ...]
    allowed: frozenset[str] | None

    def route_for(self, method: str) -> RouteConfig | None:
        for route in self.routes:
            if route.allows(method):
                return route
        return None


class RouteTable:
    """Resolves a normalized path and a method to exactly one route, or 404 / 405."""

    def __init__(self, routes: Sequence[RouteConfig], *, case_sensitive: bool = True) -> None:
        # Case-insensitive: the config lowercased the patterns; the path is lowercased here.
        self._fold_case = not case_sensitive
        by_pattern: dict[str, list[RouteConfig]] = {}
        for route in routes:
            by_pattern.setdefault(route.pattern.text, []).append(route)
        groups = [_group(members) for members in by_pattern.values()]
        self._exact = {g.pattern.text: g for g in groups if g.pattern.is_exact}
        self._ordered = sorted(
            (g for g in groups if not g.pattern.is_exact),
            key=lambda g: g.pattern.specificity,
            reverse=True,
        )
        # (raw path, method) -> (normalized path, route) of requests found before: the same
        # few paths make up most traffic. Only what was found, and bounded (paths are client
        # text).
        self._found: dict[tuple[str, str], tuple[str, RouteConfig]] = {}

    def found_before(self, raw_path: str, method: str) -> tuple[str, RouteConfig] | None:
        return self._found.get((raw_path, method))

    def remember(self, raw_path: str, method: str, found: tuple[str, RouteConfig]) -> None:
        if len(raw_path) > _REMEMBERED_PATH_LENGTH:
            return
        if len(self._found) >= _REMEMBERED_PATHS:
            self._found.clear()
        self._found[raw_path, method] = found

    def resolve(self, path: str, method: str) -> RouteConfig:
        if self._fold_case:
            path = path.lower()
        group = self._exact.get(path) or self._first_match(path)
        if group is None:
            raise NotFound(f"No route for {shown(path)}")
        route = group.route_for(method)
        if route is None:
            # The most specific path decides: never fall back to a broader (maybe public) route.
            assert group.allowed is not None  # noqa: S101 - a group without methods allows all
            raise MethodNotAllowed(
                f"Method {method} is not allowed for {path}", allowed=group.allowed
            )
        return route

    def _first_match(self, path: str) -> _PatternGroup | None:
        for group in self._ordered:
            if group.pattern.matches(path):
                return group
        return None


def _group(routes: list[RouteConfig]) -> _PatternGroup:
    allowed: frozenset[str] | None = None
    if all(route.methods is not None for route in routes):
        allowed = frozenset().union(*(route.methods or () for route in routes))
    return _PatternGroup(routes[0].pattern, tuple(routes), allowed)
