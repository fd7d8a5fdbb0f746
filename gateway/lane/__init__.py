"""The lane: the gateway's hot requests answered by the front without aiohttp's response
machinery (see lane.py)."""

from .lane import GatewayLane

__all__ = ["GatewayLane"]
