"""Matching a peer address against configured networks."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

__all__ = ["IpNetwork", "address_in", "client_address"]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def address_in(peer: str | None, networks: Sequence[IpNetwork]) -> bool:
    """Whether `peer` (an IP address as text) lies in any of `networks`."""
    if not peer or not networks:
        return False  # no parsing on every request when nothing is configured
    # Remembered by the networks' identity: the entry holds them, so while it is here no other
    # object can have their id. (Behind a trusted proxy a request asks two or three times.)
    key = (peer, id(networks))
    known = _MEMBERSHIP.get(key)
    if known is not None and known[0] is networks:
        return known[1]
    address = _parsed(peer)
    inside = address is not None and any(address in network for network in networks)
    if not isinstance(networks, tuple):
        return inside  # only an immutable sequence answers the same next time
    if len(_MEMBERSHIP) >= _REMEMBERED:  # bounded: hops in X-Forwarded-For are client text
        _MEMBERSHIP.clear()
    _MEMBERSHIP[key] = (networks, inside)
    return inside


_REMEMBERED = 4096
_MEMBERSHIP: dict[tuple[str, int], tuple[Sequence[IpNetwork], bool]] = {}


@functools.lru_cache(maxsize=_REMEMBERED)
def _parsed(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address parsed once (about 5 µs each time otherwise): behind trusted proxies every
    request checks its peer and its X-Forwarded-For hops. Bounded: hops are client text."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: list[str], trusted: Sequence[IpNetwork]) -> str:
    """The client's address: the peer, or behind trusted proxies the nearest address in
    X-Forwarded-For that is not itself a trusted proxy."""
    address = peer or ""
    if not address_in(address, trusted):
        return address
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        address = hop
        if not address_in(hop, trusted):
            break
    return address
