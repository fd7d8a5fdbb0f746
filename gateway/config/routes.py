"""Reading upstreams and routes, and refusing route tables that are ambiguous.

Routes are checked as a table once every route is read: a name used twice, the same path for
the same methods twice, or two patterns that can match one path with equal specificity (the
route table picks one pattern per path before it looks at the method, so that tie would have no
answer at request time).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from yarl import URL

from .endpoints import is_own_path
from .model import (
    AuthPolicy,
    HealthCheckConfig,
    RouteConfig,
    RouteRateLimit,
    TargetConfig,
    UpstreamConfig,
)
from .nodes import Node, Problems
from .patterns import PathPattern, PatternError, patterns_overlap
from .sections import read_section, read_settings
from .tls import read_upstream_tls

__all__ = ["read_routes", "read_upstreams"]

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_PLAIN_SEGMENTS = re.compile(r"(/[A-Za-z0-9\-._~!$&'()+,=:@]+)+")


def read_upstreams(node: Node, *, base_dir: Path) -> dict[str, UpstreamConfig]:
    """The `upstreams` mapping: name -> {url or targets, timeouts, pool, balancing, health,
    tls}."""
    upstreams: dict[str, UpstreamConfig] = {}
    for name in node.keys():
        item = node.child(name)
        if not _NAME.fullmatch(name):
            node.problem(name, "upstream names may use letters, digits, '_', '.', '-'")
        targets = _read_targets(item)
        health = (
            read_section(item.child("health"), HealthCheckConfig, check_health_check)
            if "health" in item.value
            else None
        )
        first = targets[0].url if targets else URL()
        # One TLS setting for every target: they are instances of one service.
        tls = read_upstream_tls(item.child("tls"), first, base_dir=base_dir)
        values = read_settings(item, UpstreamConfig)
        item.close()
        check_ejection_times(item, values["ejection_time"], values["max_ejection_time"])
        check_one_scheme(item, targets)
        upstreams[name] = UpstreamConfig(
            name=name, url=first, targets=targets, health=health, tls=tls, **values
        )
    if not upstreams:
        node.problem("", "define at least one upstream (name: {url: http://...})")
    return upstreams


def _read_targets(node: Node) -> tuple[TargetConfig, ...]:
    """`url` (one target) or `targets` (a list of URLs or {url, weight}), not both."""
    listed = node.items("targets")
    if "url" in node.value and listed:
        node.text("url", "")  # read, so that it is not also an unknown key
        node.problem("targets", "set either url or targets, not both")
    if not listed:
        raw_url = node.text("url", "", required=True)
        check_upstream_url(node, raw_url)
        return (TargetConfig(URL(raw_url)),) if raw_url else ()
    targets: list[TargetConfig] = []
    for where, entry in listed:
        target = node.node_at(where, entry if isinstance(entry, dict) else {"url": entry})
        raw_url = target.text("url", "", required=True)
        check_upstream_url(target, raw_url)
        values = read_settings(target, TargetConfig)
        target.close()
        if raw_url:
            targets.append(TargetConfig(URL(raw_url), **values))
    seen: set[URL] = set()
    for where, read in zip((w for w, _ in listed), targets, strict=False):
        if read.url in seen:
            node.problem_at(where, f"{read.url} is listed twice; give it a weight instead")
        seen.add(read.url)
    return tuple(targets)


def check_upstream_url(node: Node, raw_url: str) -> None:
    url = URL(raw_url)
    if raw_url and (url.scheme not in ("http", "https") or not url.host):
        node.problem("url", f"{raw_url!r} is not an http:// or https:// URL with a host")
    elif url.query_string or url.fragment:
        node.problem("url", "must not have a query string or fragment")


def check_health_check(node: Node, health: HealthCheckConfig) -> None:
    if not health.path.startswith("/"):
        node.problem("path", f"{health.path!r} must be a path starting with '/'")
    if health.timeout > health.interval:
        node.problem("timeout", "must not be longer than the interval")


def check_one_scheme(node: Node, targets: Sequence[TargetConfig]) -> None:
    """Targets share the upstream's TLS settings, so they all speak http or all https."""
    if {target.url.scheme for target in targets} >= {"http", "https"}:
        node.problem("targets", "must all be http:// or all https:// (they share `tls`)")


def check_ejection_times(node: Node, ejection_time: float, max_ejection_time: float) -> None:
    if max_ejection_time < ejection_time:
        node.problem("max_ejection_time", "must not be shorter than ejection_time")


class _ReadRoute(NamedTuple):
    where: str  # routes[i], counting every item of the list, compiled or not
    route: RouteConfig
    named: bool  # False: the name is the default one, made from the path and methods


def read_routes(
    root: Node, upstreams: Mapping[str, UpstreamConfig], *, case_sensitive: bool
) -> tuple[RouteConfig, ...]:
    """The `routes` list, in order; a route too broken to compile is left out (its problems
    are recorded)."""
    routes: list[_ReadRoute] = []
    for where, item in root.items("routes"):
        if not isinstance(item, dict):
            root.problem_at(where, "each route must be a mapping with path, upstream and auth")
            continue
        read = _read_route(root.node_at(where, item), upstreams, case_sensitive=case_sensitive)
        if read is not None:
            routes.append(read)
    check_route_conflicts(routes, root.problems)
    return tuple(read.route for read in routes)


def _read_route(
    node: Node, upstreams: Mapping[str, UpstreamConfig], *, case_sensitive: bool
) -> _ReadRoute | None:
    path = node.text("path", "", required=True)
    upstream = node.text("upstream", "", required=True)
    auth_text = node.text("auth", "", required=True)
    values = read_settings(node, RouteConfig)
    if "rate_limit" in node.value:
        values["rate_limit"] = read_section(node.child("rate_limit"), RouteRateLimit)
    # Default names stay unique for one path split by method.
    methods = values["methods"]
    default_name = path if methods is None else f"{path} {','.join(sorted(methods))}"
    given_name = node.text("name", "")
    node.close()
    if not case_sensitive:
        path, values["strip_prefix"] = path.lower(), values["strip_prefix"].lower()
    try:
        pattern = PathPattern.parse(path)
    except PatternError as exc:
        if path:
            node.problem("path", f"{path!r}: {exc}")
        return None
    if is_own_path(path):
        node.problem("path", f"{path} is the gateway's own endpoint and cannot be routed")
    # With no upstreams at all, that one problem (under `upstreams`) is the cause: every
    # route naming one would only repeat it.
    if upstream and upstreams and upstream not in upstreams:
        known = ", ".join(sorted(upstreams))
        node.problem("upstream", f"unknown upstream {upstream!r} (known: {known})")
    check_prefixes(node, pattern, values["strip_prefix"], values["add_prefix"])
    try:
        auth = AuthPolicy(auth_text)
    except ValueError:
        if auth_text:
            choices = ", ".join(policy.value for policy in AuthPolicy)
            node.problem("auth", f"{auth_text!r} must be one of: {choices}")
        return None
    if values["roles"] and auth is not AuthPolicy.REQUIRED:
        node.problem("roles", "roles need auth: required")
    route = RouteConfig(
        name=given_name or default_name, pattern=pattern, upstream=upstream, auth=auth, **values
    )
    return _ReadRoute(node.where, route, named=bool(given_name))


def check_prefixes(node: Node, pattern: PathPattern, strip_prefix: str, add_prefix: str) -> None:
    """strip_prefix is a literal leading part of the path; add_prefix is plain segments."""
    if strip_prefix:
        leading = itertools.takewhile(lambda s: "*" not in s, pattern.segments)
        literal = "/" + "/".join(leading)
        if not strip_prefix.startswith("/") or strip_prefix.endswith("/"):
            node.problem("strip_prefix", "must start with '/' and not end with one, like /api")
        elif not (literal + "/").startswith(strip_prefix + "/") or "*" in strip_prefix:
            node.problem("strip_prefix", f"{strip_prefix!r} is not a leading part of the path")
    if add_prefix and (not add_prefix.startswith("/") or add_prefix.endswith("/")):
        node.problem("add_prefix", "must start with '/' and not end with one, like /v1")
    elif add_prefix and not _PLAIN_SEGMENTS.fullmatch(add_prefix):
        node.problem("add_prefix", "may hold only plain path segments")


def check_route_conflicts(routes: Sequence[_ReadRoute], problems: Problems) -> None:
    """Names are unique, and every path has one answer (see the module docstring)."""
    seen_names: dict[str, _ReadRoute] = {}
    for i, (where, route, named) in enumerate(routes):
        first = seen_names.setdefault(route.name, routes[i])
        # Two default names clash only when path and methods are the same: that duplicate is
        # reported below, once.
        if first is not routes[i] and (named or first.named):
            problems.add(f"{where}.name", f"{route.name!r} is already used by {first.where}")
        for other_where, other, _ in routes[:i]:
            if route.pattern.text == other.pattern.text:
                if _methods_overlap(route.methods, other.methods):
                    problems.add(
                        f"{where}.path",
                        f"{route.pattern.text} duplicates {other_where} "
                        "for the same methods; give them disjoint `methods`",
                    )
            # Different patterns that tie are refused whatever their methods: the table picks
            # one pattern per path before it looks at the method.
            elif route.pattern.specificity == other.pattern.specificity and patterns_overlap(
                route.pattern, other.pattern
            ):
                problems.add(
                    f"{where}.path",
                    f"{route.pattern.text} and {other_where} ({other.pattern.text}) can match the "
                    "same path with equal specificity; make one of them more specific",
                )


def _methods_overlap(a: frozenset[str] | None, b: frozenset[str] | None) -> bool:
    return a is None or b is None or bool(a & b)
