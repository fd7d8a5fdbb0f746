"""The demo upstream: /aaa public, /bbb and /whoami protected (by the gateway), /echo for tests."""

from .app import create_upstream_app

__all__ = ["create_upstream_app"]
