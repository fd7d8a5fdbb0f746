"""How a setting is declared: its default, its kind (how to read it, within which bounds) and its
YAML key, all on the dataclass field::

    port: int = setting(8080, Integer(0, 65535))

``sections.read_settings`` reads every declared field of a section this way, so adding a setting
means adding one field. A kind reads through the ``Node`` getters, which record a problem under
the setting's YAML path and fall back to the default.
"""

from __future__ import annotations

import abc
import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import Field, dataclass, field, fields
from types import MappingProxyType
from typing import Any

from ..networks import IpNetwork
from .names import ROLE_RULE, is_valid_role
from .nodes import Node

__all__ = [
    "HEADER_NAME",
    "ON_RELOAD",
    "ON_RESTART",
    "Boolean",
    "Choice",
    "Duration",
    "Fraction",
    "HeaderNames",
    "HeaderPatterns",
    "Integer",
    "Kind",
    "Methods",
    "Networks",
    "OptionalBoolean",
    "Origins",
    "Roles",
    "Size",
    "Text",
    "declared",
    "restart_fields",
    "setting",
]

# RFC 9110 token: what a header name (and an HTTP method) may be spelled with.
HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_SETTING = "gateway.config.setting"
_RELOAD = "gateway.config.applied_on_reload"


class Kind(abc.ABC):
    """How one setting is read from its mapping."""

    @abc.abstractmethod
    def read(self, node: Node, key: str, default: Any) -> Any:
        """The value under `key`, or `default` (with a problem recorded when it was invalid)."""


@dataclass(frozen=True, slots=True)
class Setting:
    kind: Kind
    # The YAML key when it is not the field's name; `a.b` is key `b` of the mapping `a`.
    key: str | None = None


def setting(
    default: Any, kind: Kind, *, key: str | None = None, applied_on_reload: bool = False
) -> Any:
    """A dataclass field read from the config file as `kind`, `default` when absent.

    `applied_on_reload` is for GatewayConfig's own fields (see ON_RELOAD)."""
    metadata = {_SETTING: Setting(kind, key), _RELOAD: applied_on_reload}
    return field(default=default, metadata=metadata)


# Metadata for GatewayConfig's section fields: when a change to the section takes effect.
# ON_RELOAD: a SIGHUP reload puts the new value to use. ON_RESTART: read at start-up only, so a
# reload that sees a change logs that it needs a restart.
ON_RELOAD: Mapping[str, object] = MappingProxyType({_RELOAD: True})
ON_RESTART: Mapping[str, object] = MappingProxyType({_RELOAD: False})


def declared(cls: type) -> Iterator[tuple[Field[Any], Setting]]:
    """The fields of a dataclass that are settings, in declaration order, with their setting."""
    for item in fields(cls):
        declaration = item.metadata.get(_SETTING)
        if isinstance(declaration, Setting):
            yield item, declaration


def restart_fields(cls: type) -> tuple[str, ...]:
    """The fields marked ON_RESTART, or settings not applied on reload; a field with neither
    mark (such as where the config came from) is not configuration."""
    return tuple(item.name for item in fields(cls) if item.metadata.get(_RELOAD) is False)


@dataclass(frozen=True, slots=True)
class Text(Kind):
    def read(self, node: Node, key: str, default: Any) -> str:
        return node.text(key, default)


@dataclass(frozen=True, slots=True)
class Integer(Kind):
    minimum: int
    maximum: int

    def read(self, node: Node, key: str, default: Any) -> int:
        return node.integer(key, default, minimum=self.minimum, maximum=self.maximum)


@dataclass(frozen=True, slots=True)
class Duration(Kind):
    """Seconds, written as a number or like 30s, 15m, 7d, 1h30m."""

    minimum: float
    maximum: float | None = None
    # Whole seconds (an int), for values that go into a header such as Access-Control-Max-Age.
    whole: bool = False

    def read(self, node: Node, key: str, default: Any) -> float:
        seconds = node.duration(key, default, minimum=self.minimum, maximum=self.maximum)
        return int(seconds) if self.whole else seconds


@dataclass(frozen=True, slots=True)
class Fraction(Kind):
    """A share between 0 and 1, written as 0.2 or 20%."""

    def read(self, node: Node, key: str, default: Any) -> float:
        value = node.text(key, "")
        if not value:
            return float(default)
        text = value.strip()
        try:
            share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            node.problem(key, f"expected a share like 0.2 or 20%, got {value!r}")
            return float(default)
        if not 0.0 <= share <= 1.0:
            node.problem(key, f"{value!r} must be between 0 and 1 (0% and 100%)")
            return float(default)
        return share


@dataclass(frozen=True, slots=True)
class Size(Kind):
    """Bytes, written as a number or like 512KiB, 64MiB, 1GiB."""

    minimum: int
    maximum: int | None = None

    def read(self, node: Node, key: str, default: Any) -> int:
        return node.size(key, default, minimum=self.minimum, maximum=self.maximum)


@dataclass(frozen=True, slots=True)
class Boolean(Kind):
    def read(self, node: Node, key: str, default: Any) -> bool:
        return node.boolean(key, default)


@dataclass(frozen=True, slots=True)
class OptionalBoolean(Kind):
    """true or false, or None when absent (a default decided elsewhere)."""

    def read(self, node: Node, key: str, default: Any) -> bool | None:
        if not node.given(key) or node.value[key] in (None, ""):
            return None
        return node.boolean(key, False)


@dataclass(frozen=True, slots=True, init=False)
class Choice(Kind):
    """One of a few words, in any case (read lowercased)."""

    choices: tuple[str, ...]

    def __init__(self, *choices: str) -> None:
        object.__setattr__(self, "choices", choices)

    def read(self, node: Node, key: str, default: Any) -> str:
        value = node.text(key, default).lower()
        if value not in self.choices:
            *others, last = self.choices
            node.problem(key, f"{value!r} must be {', '.join(others)} or {last}")
            return str(default)
        return value


@dataclass(frozen=True, slots=True)
class Networks(Kind):
    """A list of IP addresses and CIDR networks; absent or empty: the default list."""

    def read(self, node: Node, key: str, default: Any) -> tuple[IpNetwork, ...]:
        items = node.items(key)
        if not items:
            return tuple(default)
        networks: list[IpNetwork] = []
        for where, item in items:
            try:
                networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
            except ValueError:
                node.problem_at(where, f"{item!r} is not an IP address or CIDR network")
        return tuple(networks)


@dataclass(frozen=True, slots=True)
class HeaderNames(Kind):
    """A list of header (or method) names; absent or empty: the default list."""

    upper: bool = False

    def read(self, node: Node, key: str, default: Any) -> tuple[str, ...]:
        items = node.items(key)
        if not items:
            return tuple(default)
        values = []
        for where, item in items:
            value = str(item).strip()
            if not HEADER_NAME.fullmatch(value):
                node.problem_at(where, f"{value!r} is not a valid name")
            values.append(value.upper() if self.upper else value)
        return tuple(values)


@dataclass(frozen=True, slots=True)
class HeaderPatterns(Kind):
    """Header names, each exact or ending in '*' (a prefix); absent: the default list, an
    explicit empty list: none."""

    def read(self, node: Node, key: str, default: Any) -> tuple[str, ...]:
        items = node.items(key)
        if not items:
            return () if node.given(key) and node.value[key] == [] else tuple(default)
        values = []
        for where, item in items:
            value = str(item).strip()
            if not HEADER_NAME.fullmatch(value) or "*" in value[:-1]:
                node.problem_at(where, f"{value!r} is not a header name (or a prefix ending in *)")
            values.append(value)
        return tuple(values)


@dataclass(frozen=True, slots=True)
class Origins(Kind):
    """A set of browser origins, kept without a trailing '/' (checked in sections.check_cors)."""

    def read(self, node: Node, key: str, default: Any) -> frozenset[str]:
        return frozenset(str(v).rstrip("/") for _, v in node.items(key))


@dataclass(frozen=True, slots=True)
class Methods(Kind):
    """HTTP methods out of `allowed`; '*' or none: every method (None). GET brings HEAD."""

    allowed: frozenset[str]

    def read(self, node: Node, key: str, default: Any) -> frozenset[str] | None:
        methods: set[str] = set()
        for where, item in node.items(key):
            method = str(item).upper()
            if method == "*":
                return None
            if method not in self.allowed:
                choices = ", ".join(sorted(self.allowed))
                node.problem_at(where, f"{item!r} is not one of {choices} or *")
            methods.add(method)
        if not methods:
            return None
        if "GET" in methods:
            methods.add("HEAD")
        return frozenset(methods)


@dataclass(frozen=True, slots=True)
class Roles(Kind):
    """A set of role names."""

    def read(self, node: Node, key: str, default: Any) -> frozenset[str]:
        roles = set()
        for where, item in node.items(key):
            if not is_valid_role(str(item)):
                node.problem_at(where, f"{item!r} is not a role name: {ROLE_RULE}")
            roles.add(str(item))
        return frozenset(roles)
