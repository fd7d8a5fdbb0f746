"""The demo upstream: /aaa public; /bbb, /whoami and /ws protected (by the gateway); /echo;
/ redirects to the /demo page."""

from .app import create_upstream_app
from .assertion import AssertionVerifier

__all__ = ["AssertionVerifier", "create_upstream_app"]
