"""Reading a small JSON object from a request body, with a clear 400 or 415 for every way it is
wrong."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..errors import BadRequest, UnsupportedMediaType, shown

__all__ = ["read_json_object", "read_small_body", "require_string"]

JSON_TYPE = "application/json"
MAX_JSON_BYTES = 16 * 1024


async def read_json_object(request: web.Request, *, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The body as a JSON object, read up to `limit` bytes."""
    body = await read_small_body(request, limit=limit, send="plain JSON")
    # A cross-site <form enctype="text/plain"> can post a JSON-looking body without a preflight;
    # application/json cannot be sent cross-site without one, so requiring it keeps hostile
    # pages from logging their visitors in (or guessing passwords from their addresses).
    if request.content_type != JSON_TYPE:
        raise UnsupportedMediaType(f"Send the body as {JSON_TYPE} (Content-Type: {JSON_TYPE})")
    if not body.strip():
        raise BadRequest("Request body is empty; expected a JSON object")
    try:
        value = json.loads(body.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys)
    except UnicodeDecodeError:
        raise BadRequest("Request body is not valid UTF-8") from None
    except RecursionError:
        raise BadRequest("Request body is nested too deeply") from None
    except _DuplicateKey as exc:
        raise BadRequest(
            f"Request body has the key '{shown(exc.args[0])}' more than once"
        ) from None
    except ValueError:
        raise BadRequest("Request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadRequest(f"Request body must be a JSON object, not {_json_type(value)}")
    return value


async def read_small_body(request: web.Request, *, limit: int, send: str) -> bytearray:
    """The whole body, uncompressed and at most `limit` bytes (`send` says what to send instead of
    a compressed body). Stops reading at the first byte past the limit, whatever the client said."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType(f"Content-Encoding {encoding} is not accepted here; send {send}")
    if request.content_length is not None and request.content_length > limit:
        raise BadRequest(f"Request body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise BadRequest(f"Request body is larger than {limit} bytes")
    return body


def require_string(body: dict[str, Any], key: str, *, max_length: int = 4096) -> str:
    """A non-empty string field, or 400 naming the field."""
    if key not in body or body[key] is None:
        raise BadRequest(f"'{key}' is required")
    value = body[key]
    if not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string, not {_json_type(value)}")
    if value == "":
        raise BadRequest(f"'{key}' must not be empty")
    if len(value) > max_length:
        raise BadRequest(f"'{key}' is longer than {max_length} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape
        raise BadRequest(f"'{key}' is not valid Unicode text") from None
    return value


class _DuplicateKey(ValueError):
    pass


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    return "null"
