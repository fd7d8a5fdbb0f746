"""The one translator of the upstream client's failures into the gateway's errors, for HTTP
and WebSocket forwarding alike (recording the metric is the caller's separate step)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aiohttp

from ..config import UpstreamConfig
from ..errors import BadGateway, GatewayTimeout, UpstreamFailure
from .http1 import ConnectionLost, UpstreamProtocolError, UpstreamTimeout
from .pool import ConnectFailed, TlsFailed

__all__ = ["upstream_errors", "upstream_failure"]


@contextlib.contextmanager
def upstream_errors(upstream: UpstreamConfig) -> Iterator[None]:
    """`upstream_failure` around a block: what the WebSocket relay is wrapped in."""
    try:
        yield
    except Exception as exc:
        translated = upstream_failure(upstream, exc)
        if translated is None:
            raise
        raise translated from exc


def upstream_failure(upstream: UpstreamConfig, exc: Exception) -> UpstreamFailure | None:
    """The gateway's error for a failure of the upstream client: the one ladder for HTTP and
    WebSocket forwarding. None for errors of the gateway's own (a client body too large or
    stalled) and for the gateway's errors already made: they pass through untouched."""
    if isinstance(exc, UpstreamFailure):
        return None
    if isinstance(exc, TlsFailed):
        return BadGateway(upstream.name, "tls", "failed the TLS handshake")
    if isinstance(exc, ConnectFailed):
        return BadGateway(upstream.name, "connect", "is unreachable")
    if isinstance(exc, UpstreamTimeout):
        return GatewayTimeout(
            upstream.name, "timeout", f"did not answer within {upstream.read_timeout:g}s"
        )
    if isinstance(exc, (UpstreamProtocolError, ConnectionLost)):
        return BadGateway(upstream.name, "protocol", "failed to answer")
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return BadGateway(
            upstream.name, "handshake", f"refused the WebSocket handshake ({exc.status})"
        )
    if isinstance(exc, aiohttp.ClientSSLError):
        return BadGateway(upstream.name, "tls", "failed the TLS handshake")
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return BadGateway(upstream.name, "connect", "is unreachable")
    if isinstance(exc, TimeoutError):
        return GatewayTimeout(
            upstream.name, "timeout", f"did not answer within {upstream.read_timeout:g}s"
        )
    if isinstance(exc, aiohttp.ClientError):
        return BadGateway(upstream.name, "protocol", "failed to answer")
    return None
