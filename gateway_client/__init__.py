"""A Python client for services behind the gateway that refreshes silently.

Importing it loads aiohttp and the standard library only, never the gateway server's stack.
"""

from .client import GatewayClient
from .errors import GatewayClientError, LoginRequired, RefreshFailed
from .token_store import FileTokenStore, MemoryTokenStore, Tokens, TokenStore

__all__ = [
    "FileTokenStore",
    "GatewayClient",
    "GatewayClientError",
    "LoginRequired",
    "MemoryTokenStore",
    "RefreshFailed",
    "TokenStore",
    "Tokens",
]
