"""An authentication gateway: logs users in and guards unmodified backends."""

from .app import create_app
from .auth.tokens import Identity, TokenPair, TokenService
from .config import GatewayConfig, load_config, parse_config
from .errors import ConfigError, GatewayError

__all__ = [
    "ConfigError",
    "GatewayConfig",
    "GatewayError",
    "Identity",
    "TokenPair",
    "TokenService",
    "create_app",
    "load_config",
    "parse_config",
]
