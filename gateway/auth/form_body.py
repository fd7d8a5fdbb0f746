"""Reading a small HTML form (application/x-www-form-urlencoded) from a request body, with a
clear 400 or 415 for every way it is wrong."""

from __future__ import annotations

from urllib.parse import parse_qsl

from aiohttp import web

from ..errors import BadRequest, UnsupportedMediaType, shown
from .json_body import read_small_body

__all__ = ["FORM_TYPE", "read_form"]

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 16 * 1024
MAX_FIELDS = 16


async def read_form(request: web.Request, *, limit: int = MAX_FORM_BYTES) -> dict[str, str]:
    """The form's fields, read up to `limit` bytes; a field given twice is refused."""
    if request.content_type != FORM_TYPE:
        raise UnsupportedMediaType(f"Send the form as {FORM_TYPE}")
    body = await read_small_body(request, limit=limit, send="the form uncompressed")
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except UnicodeDecodeError:
        raise BadRequest("The form is not URL-encoded UTF-8") from None
    except ValueError:
        raise BadRequest(f"The form has more than {MAX_FIELDS} fields") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields:
            raise BadRequest(f"The form has the field '{shown(name)}' more than once")
        fields[name] = value
    return fields
