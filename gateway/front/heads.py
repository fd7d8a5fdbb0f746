"""Request heads the front serves itself, parsed by aiohttp's own request parser (its C build,
llhttp), so a head means to the front exactly what it means to aiohttp: HTTP/1.1, origin-form,
no body, no upgrade, no `Expect`. Anything else is not refused here but left to aiohttp
(`None`), which answers it as it always has."""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import HttpVersion11, hdrs
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParser, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD

__all__ = ["HeadParser", "head_end"]

# Methods the front takes; any other token is aiohttp's.
_METHODS: Final = frozenset({"GET", "HEAD", "DELETE", "OPTIONS", "POST", "PUT", "PATCH"})


def head_end(buffer: bytes | bytearray, start: int = 0) -> int:
    """Where the head at the start of `buffer` ends (just past its blank line), or -1 while it
    is incomplete. A head with bare-LF line ends is never found: aiohttp gets it. `start` is how
    much of `buffer` an earlier call already searched: a head arriving in many small pieces is
    then searched once, not once per piece."""
    end = buffer.find(b"\r\n\r\n", max(0, start - 3))
    return -1 if end < 0 else end + 4


class HeadParser:
    """One per connection (llhttp keeps its state between the messages of a connection)."""

    def __init__(
        self,
        protocol: BaseProtocol,
        loop: asyncio.AbstractEventLoop,
        *,
        max_field_size: int,
        max_headers: int,
    ) -> None:
        # The limits aiohttp's own protocol is given (gateway.app's handler_args).
        self._parser = HttpRequestParser(
            protocol,
            loop,
            2**16,
            max_line_size=max_field_size,
            max_field_size=max_field_size,
            max_headers=max_headers,
            auto_decompress=False,
        )

    def parse(self, head: bytes) -> RawRequestMessage | None:
        """The message of one complete head, or None when aiohttp should have it; after None
        the parser is spent and the connection goes to aiohttp for good."""
        try:
            messages, upgraded, tail = self._parser.feed_data(head)
        except HttpProcessingError:
            return None
        if upgraded or tail or len(messages) != 1:
            return None
        message, payload = messages[0]
        if (
            payload is not EMPTY_PAYLOAD  # a body follows (or is framed to)
            or message.version != HttpVersion11
            or message.method not in _METHODS
            or message.upgrade
            or hdrs.EXPECT in message.headers
            or not message.path.startswith("/")
            or not message.path.isascii()
        ):
            return None
        return message
