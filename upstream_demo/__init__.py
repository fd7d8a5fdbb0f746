"""The demo upstream: /aaa public; /bbb, /whoami and /ws protected (by the gateway); /echo;
/ redirects to the /demo page."""

from .app import create_upstream_app

__all__ = ["create_upstream_app"]
