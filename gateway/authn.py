"""Reading the bearer token from a request: exactly one `Authorization: Bearer <token>`."""

from __future__ import annotations

from multidict import CIMultiDictProxy

from .errors import Unauthorized
from .revocation import RevocationView
from .tokens import Identity, TokenService

__all__ = ["authenticate"]


def authenticate(
    headers: CIMultiDictProxy[str], tokens: TokenService, revocations: RevocationView
) -> Identity:
    """The verified identity of a live session, or 401 saying what is wrong."""
    values = headers.getall("Authorization", ())
    if not values:
        raise Unauthorized("Missing bearer token", token_presented=False)
    if len(values) > 1:
        raise Unauthorized("Send exactly one Authorization header", token_presented=True)
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthorized("Authorization must use the Bearer scheme", token_presented=False)
    token = token.strip()
    if not token or " " in token:
        raise Unauthorized("Authorization must be 'Bearer <token>'", token_presented=True)
    identity = tokens.verify_access(token)
    if revocations.is_revoked(identity.session_id):
        raise Unauthorized("Session has been revoked; log in again", token_presented=True)
    return identity
