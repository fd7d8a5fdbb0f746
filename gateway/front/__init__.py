"""The gateway's own HTTP/1.1 server protocol in front of aiohttp's: the requests that make up
the load are served through the app without aiohttp's per-request server machinery; every other
connection is handed to aiohttp (see protocol.py)."""

from .server import FrontRunner

__all__ = ["FrontRunner"]
