"""The gateway's error answers as the tests expect them."""

from __future__ import annotations

__all__ = ["error_body"]


def error_body(status: int, error: str, message: str) -> dict[str, object]:
    """The JSON body of every error answer. `error` is the reason phrase, spelled out by the
    test rather than looked up as the gateway does, so a changed phrase shows."""
    return {"statusCode": status, "message": message, "error": error}
