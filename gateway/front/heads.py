"""Request heads the front serves itself, parsed with httptools (llhttp, the parser aiohttp's
own C parser wraps): HTTP/1.1, origin-form, no body, no upgrade, no `Expect`. Anything else is
not refused here but left to aiohttp (`None`), which answers it as it always has."""

from __future__ import annotations

from typing import Final

import httptools
from aiohttp import HttpVersion11
from aiohttp.http_parser import SINGLETON_HEADERS, RawRequestMessage
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

__all__ = ["HeadParser", "head_end"]

# Methods the front takes; any other token (and its validation) is aiohttp's.
_METHODS: Final = frozenset({b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"POST", b"PUT", b"PATCH"})
# Headers that mean aiohttp's machinery is wanted: a body's framing, a protocol switch, an
# interim 100 Continue; the old WebSocket draft's key, which aiohttp refuses. (A Content-Length
# of 0 is no body.)
_NOT_OURS: Final = frozenset({b"transfer-encoding", b"upgrade", b"expect", b"sec-websocket-key1"})
# Headers a request may carry once (RFC 9110): aiohttp refuses a second copy with a 400, and
# two Hosts would let the gateway and a proxy in front of it disagree on which one counts.
_SINGLETONS: Final = frozenset(name.encode("ascii") for name in SINGLETON_HEADERS)
_URLS_KEPT: Final = 4096
_ORIGIN_FORM_BYTES: Final = frozenset(range(0x21, 0x7F)) - {ord("#")}


def head_end(buffer: bytes | bytearray, start: int = 0) -> int:
    """Where the head at the start of `buffer` ends (just past its blank line), or -1 while it
    is incomplete. A head with bare-LF line ends is never found: aiohttp gets it. `start` is how
    much of `buffer` an earlier call already searched: a head arriving in many small pieces is
    then searched once, not once per piece."""
    end = buffer.find(b"\r\n\r\n", max(0, start - 3))
    return -1 if end < 0 else end + 4


class HeadParser:
    """One per connection (llhttp keeps its state between the messages of a connection)."""

    def __init__(self, max_headers: int, urls: dict[str, URL]) -> None:
        self._max_headers = max_headers
        # Request targets already parsed into URLs, shared by a server's connections (yarl
        # URLs are immutable; targets come from clients, so the table is bounded).
        self._urls = urls
        self._parser = httptools.HttpRequestParser(self)
        self._target = b""
        self._raw: list[tuple[bytes, bytes]] = []
        self._complete = False
        self._ours = True
        self._seen: set[bytes] = set()
        self._method = b""
        self._version = ""
        self._keep_alive = False
        self.broken = False

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered in _NOT_OURS:
            self._ours = False
        elif lowered in _SINGLETONS:
            if lowered in self._seen:
                self._ours = False
            self._seen.add(lowered)
        # llhttp drops the whitespace before a value but not after it; aiohttp strips it too.
        self._raw.append((name, value.rstrip(b" \t")))

    def on_headers_complete(self) -> None:
        # Read here: once the message is complete llhttp has reset for the next one.
        parser = self._parser
        self._method = parser.get_method()
        self._version = parser.get_http_version()
        self._keep_alive = parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self._complete = True

    def parse(self, head: bytes) -> RawRequestMessage | None:
        """The message of a complete head, or None when aiohttp should have it. After None the
        parser is spent (`broken`): the connection goes to aiohttp for good."""
        self._target, self._raw, self._complete, self._ours = b"", [], False, True
        self._seen = set()
        parser = self._parser
        try:
            parser.feed_data(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self.broken = True
            return None
        target = self._target
        if not (
            self._complete
            and self._ours
            and self._version == "1.1"
            and self._method in _METHODS
            and b"host" in self._seen  # HTTP/1.1 requires it; aiohttp answers 400 without
            and target[:1] == b"/"
            and len(self._raw) <= self._max_headers
            and _ORIGIN_FORM_BYTES.issuperset(target)
        ):
            self.broken = True
            return None
        raw = tuple(self._raw)
        path = target.decode("ascii")
        url = self._urls.get(path)
        if url is None:
            route, _, query = path.partition("?")
            url = URL.build(path=route, query_string=query, encoded=True)
            if len(self._urls) < _URLS_KEPT:
                self._urls[path] = url
        return RawRequestMessage(
            self._method.decode("ascii"),
            path,
            HttpVersion11,
            CIMultiDictProxy(
                CIMultiDict(
                    [
                        (
                            name.decode("utf-8", "surrogateescape"),
                            value.decode("utf-8", "surrogateescape"),
                        )
                        for name, value in raw
                    ]
                )
            ),
            raw,
            not self._keep_alive,
            None,
            False,
            False,
            url,
        )
