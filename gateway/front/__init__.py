"""The gateway's own HTTP/1.1 server protocol in front of aiohttp's: bodiless HTTP/1.1 requests
are offered to a lane (answered without any aiohttp object) or served through the app; every
other connection is handed to aiohttp (see protocol.py)."""

from .protocol import FrontProtocol
from .server import FrontRunner, Lane

__all__ = ["FrontProtocol", "FrontRunner", "Lane"]
