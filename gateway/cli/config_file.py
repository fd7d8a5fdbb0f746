"""Reading the config file for a command.

load_config reports what it understands as ConfigError problems; a value it could not parse at
all (a port out of range inside a URL, a file that is not UTF-8) escapes as ValueError. Both
become configuration problems here, so no command shows a traceback for its config.
"""

from __future__ import annotations

from pathlib import Path

from ..config import GatewayConfig, load_config
from ..errors import ConfigError

__all__ = ["read_config"]


def read_config(path: Path, *, ephemeral_key_ok: bool = False) -> GatewayConfig:
    """load_config, with every failure a ConfigError."""
    try:
        return load_config(path, ephemeral_key_ok=ephemeral_key_ok)
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    except ValueError as exc:
        raise ConfigError([f"{path}: a value cannot be parsed: {exc}"]) from None
