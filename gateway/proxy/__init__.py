"""Forwarding permitted traffic: path normalization, the route table, the upstream client,
the header policy, the WebSocket relay and the reloadable runtime."""
