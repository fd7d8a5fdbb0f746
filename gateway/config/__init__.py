"""Configuration: YAML with ${VAR:-default} interpolation, parsed once into frozen typed objects.

Validation collects every problem at once, each prefixed with its YAML path
(``routes[2].upstream: ...``), and raises ``ConfigError``. Nothing else in the gateway reads raw
YAML. The modules, from the bottom up:

- ``units``: durations and sizes;
- ``nodes``: the walker over the parsed document that records problems under YAML paths;
- ``settings``: how a field declares its default, kind, bounds and YAML key;
- ``model``: the frozen dataclasses, each default stated once on its field;
- ``sections``: the generic section reader and the named cross-field checks;
- ``routes``: upstreams and routes, with the route table's conflict checks;
- ``browser``: the browser section (cookie sessions, the login page) and its logo file;
- ``tls``: ``server.tls`` and ``upstreams.<name>.tls``, and the SSL contexts built from their files;
- ``reader``: the file, YAML, interpolation and the assembly of a ``GatewayConfig``.
"""

from __future__ import annotations

# The package's front door is the model's names plus the reader's entry points.
from . import model
from .model import *  # noqa: F403
from .reader import load_config, parse_config
from .units import parse_duration

__all__ = ["load_config", "parse_config", "parse_duration"]
__all__ += model.__all__
