"""When a site cannot listen: one line naming the port and the setting that moves it."""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

from ..server import ListenError
from .errors import CommandError

__all__ = ["Listener", "cannot_listen", "check_can_listen", "gateway_listener"]


@dataclass(frozen=True, slots=True)
class Listener:
    """What listens on a port and the settings that place it, for a one-line error. Settings
    are named by the variable the shipped config.yaml reads and by their config key."""

    who: str
    port_setting: str
    host_setting: str
    example: str


def gateway_listener(config_path: object, port: int) -> Listener:
    """The gateway's own port (server.host, server.port)."""
    return Listener(
        "the gateway",
        f"GATEWAY_PORT (server.port in {config_path})",
        f"GATEWAY_HOST (server.host in {config_path})",
        f"GATEWAY_PORT={port + 1}",
    )


def cannot_listen(exc: ListenError, listeners: dict[tuple[str, int], Listener]) -> CommandError:
    """The error for `exc`, from the listener on its (host, port)."""
    listener = listeners[(exc.host, exc.port)]
    address = f"{exc.host}:{exc.port}"
    if exc.errno == errno.EADDRINUSE:
        return CommandError(
            f"port {exc.port} is already in use, so {listener.who} cannot listen on {address}: "
            f"set {listener.port_setting} to a free port, e.g. {listener.example}"
        )
    # The loop's own message repeats the address; the system's names only the problem.
    reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror
    return CommandError(
        f"{listener.who} cannot listen on {address} ({reason}): "
        f"check {listener.host_setting} and {listener.port_setting}"
    )


def check_can_listen(host: str, port: int) -> None:
    """Bind once, before starting workers: on a busy port each worker would fail at start and
    be restarted forever."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        raise ListenError(host, port, exc) from exc
