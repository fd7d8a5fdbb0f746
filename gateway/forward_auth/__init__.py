"""Forward auth: the gateway as the authentication service of an ingress (nginx `auth_request`,
Traefik `forwardAuth`, Caddy `forward_auth`, Envoy `ext_authz`) that proxies by itself.

- ``shapes``: the original request, read from what each ingress sends;
- ``decision``: the endpoints that answer it through the proxy's own policy path.

A folder of its own above ``proxy/`` (not inside it): it uses the proxy's policy path and
runtime but forwards nothing, and the proxy must not know about ingress request shapes.
"""

from __future__ import annotations

from .decision import Decisions

__all__ = ["Decisions"]
