"""The OpenAPI document for the gateway's own endpoints, served at /openapi.json.

Proxied routes belong to their upstreams and are not described here. schemathesis checks the
live gateway against this document in CI (tests/test_openapi.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..request_keys import ROUTE_NAME

__all__ = ["openapi_handler"]


def _json(schema: str) -> dict[str, Any]:
    """A JSON body of one of the document's schemas."""
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}


def _object(properties: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    """A JSON object schema with these properties: all of them required, or none."""
    if not required:
        return {"type": "object", "properties": properties}
    return {"type": "object", "required": list(properties), "properties": properties}


def _error(description: str, *headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json("Error")}
    if headers:
        response["headers"] = {h: {"$ref": f"#/components/headers/{h}"} for h in headers}
    return response


_COMMON_ERRORS = {
    "405": _error("Wrong method", "Allow"),
    "431": _error("Request header block too large"),
}
_BODY_ERRORS = {
    "400": _error("The body is not a JSON object with the required string fields"),
    "415": _error("The body is not sent as application/json, or has a Content-Encoding"),
}
_NO_STORE_HEADER = {"Cache-Control": {"schema": {"type": "string", "enum": ["no-store"]}}}
_TOKENS = {
    "description": "A token pair",
    "headers": _NO_STORE_HEADER,
    "content": _json("TokenPair"),
}
_UNAVAILABLE = _error("The database is unavailable; retry later", "Retry-After")
# Bearer token or session cookies (the cookie form also passes the Origin check when unsafe).
_CALLER_ERRORS = {
    "401": _error("No live session: a missing, bad, expired or revoked token", "WWW-Authenticate"),
    "403": _error("A cross-origin request by session cookie"),
    "503": _UNAVAILABLE,
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "auth-gateway",
        "version": "1",
        "description": "The gateway's own endpoints. Every other path is a configured route.",
    },
    "paths": {
        "/user/login": {
            "post": {
                "summary": "Log in with a user name and password",
                "requestBody": {
                    "required": True,
                    "content": _json("Credentials"),
                },
                "responses": {
                    "200": _TOKENS,
                    **_BODY_ERRORS,
                    "401": _error("Unknown user or wrong password", "WWW-Authenticate"),
                    "429": _error("Too many failed logins", "Retry-After"),
                    "503": _UNAVAILABLE,
                    **_COMMON_ERRORS,
                },
            }
        },
        "/user/refresh": {
            "get": {
                "summary": "Trade a refresh token for a new pair (the classic clients' form)",
                "parameters": [
                    {
                        "name": "refresh_token",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1},
                    }
                ],
                "responses": {
                    "200": _TOKENS,
                    "400": _error("No refresh_token, or more than one"),
                    "401": _error("Invalid, expired, reused or revoked", "WWW-Authenticate"),
                    "503": _UNAVAILABLE,
                    **_COMMON_ERRORS,
                },
            },
            "post": {
                "summary": "Trade a refresh token for a new pair",
                "requestBody": {
                    "required": True,
                    "content": _json("RefreshRequest"),
                },
                "responses": {
                    "200": _TOKENS,
                    **_BODY_ERRORS,
                    "401": _error("Invalid, expired, reused or revoked", "WWW-Authenticate"),
                    "503": _UNAVAILABLE,
                    **_COMMON_ERRORS,
                },
            },
        },
        "/user/logout": {
            "post": {
                "summary": "End a session (success also for unknown or already ended tokens); "
                'with {"all": true}, every session of the caller (Bearer or cookie)',
                "requestBody": {
                    "required": False,
                    "content": _json("LogoutRequest"),
                },
                "responses": {
                    "200": {
                        "description": "The session (or every session) is over",
                        "content": _json("Message"),
                    },
                    **_BODY_ERRORS,
                    "401": _error("all: no live session to end them from", "WWW-Authenticate"),
                    "403": _error("all: a cross-origin request by session cookie"),
                    "503": _UNAVAILABLE,
                    **_COMMON_ERRORS,
                },
            }
        },
        "/user/sessions": {
            "get": {
                "summary": "The caller's live sessions (Bearer token or session cookies)",
                "responses": {
                    "200": {
                        "description": "Oldest first; `current` marks the caller's own",
                        "headers": _NO_STORE_HEADER,
                        "content": _json("SessionList"),
                    },
                    **_CALLER_ERRORS,
                    **_COMMON_ERRORS,
                },
            }
        },
        "/user/sessions/{session_id}": {
            "delete": {
                "summary": "End one of the caller's sessions",
                "parameters": [
                    {
                        "name": "session_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The session is over",
                        "headers": _NO_STORE_HEADER,
                        "content": _json("Message"),
                    },
                    "404": _error("No live session of the caller has that id"),
                    **_CALLER_ERRORS,
                    **_COMMON_ERRORS,
                },
            }
        },
        "/.well-known/jwks.json": {
            "get": {
                "summary": "Public signing keys (RS256/ES256/EdDSA deployments)",
                "responses": {
                    "200": {
                        "description": "A JWK set",
                        "content": _json("Jwks"),
                    },
                    "404": _error("Tokens are signed with a shared secret: no public keys"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "responses": {
                    "200": {
                        "description": "The process is alive",
                        "content": _json("Status"),
                    },
                    **_COMMON_ERRORS,
                },
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: config loaded and database reachable",
                "responses": {
                    "200": {
                        "description": "Ready",
                        "content": _json("Ready"),
                    },
                    "503": {
                        "description": "Not ready",
                        "headers": {"Retry-After": {"$ref": "#/components/headers/Retry-After"}},
                        "content": _json("Ready"),
                    },
                    **_COMMON_ERRORS,
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (when served on the gateway's port)",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "403": _error("Not from an allowed network"),
                    "404": _error("Metrics are served on their own port"),
                    **_COMMON_ERRORS,
                },
            }
        },
    },
    "components": {
        "headers": {
            "Allow": {"schema": {"type": "string"}},
            "Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"}},
            "WWW-Authenticate": {"schema": {"type": "string", "pattern": "^Bearer "}},
        },
        "schemas": {
            "Error": _object(
                {
                    "statusCode": {"type": "integer", "minimum": 400, "maximum": 599},
                    "message": {"type": "string"},
                    "error": {"type": "string"},
                }
            ),
            "Credentials": _object(
                {
                    "username": {"type": "string", "minLength": 1, "maxLength": 256},
                    "password": {"type": "string", "minLength": 1, "maxLength": 1024},
                }
            ),
            "RefreshRequest": _object({"refresh_token": {"type": "string", "minLength": 1}}),
            "LogoutRequest": _object(
                {"refresh_token": {"type": "string", "minLength": 1}, "all": {"type": "boolean"}},
                required=False,
            ),
            "SessionList": _object(
                {
                    "sessions": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/UserSession"},
                    }
                }
            ),
            "UserSession": _object(
                {
                    "id": {"type": "string"},
                    "created_at": {"type": "string", "format": "date-time"},
                    "last_used_at": {"type": "string", "format": "date-time"},
                    "expires_at": {"type": "string", "format": "date-time"},
                    "login": {"$ref": "#/components/schemas/SeenClient"},
                    "last_refresh": {"$ref": "#/components/schemas/SeenClient"},
                    "current": {"type": "boolean"},
                }
            ),
            "SeenClient": _object(
                {"address": {"type": "string"}, "user_agent": {"type": "string"}}
            ),
            "TokenPair": _object(
                {
                    "access_token": {"type": "string"},
                    "refresh_token": {"type": "string"},
                    "token_type": {"type": "string", "enum": ["Bearer"]},
                    "expires_in": {"type": "integer", "minimum": 0},
                    "refresh_expires_in": {"type": "integer", "minimum": 0},
                }
            ),
            "Message": _object({"message": {"type": "string"}}),
            "Status": _object({"status": {"type": "string"}}),
            "Ready": _object(
                {
                    "status": {"type": "string", "enum": ["ready", "unavailable"]},
                    "checks": {"type": "object", "additionalProperties": {"type": "string"}},
                }
            ),
            "Jwks": _object({"keys": {"type": "array", "items": {"type": "object"}}}),
        },
    },
}


async def openapi_handler(request: web.Request) -> web.Response:
    request[ROUTE_NAME] = "openapi"
    return web.json_response(OPENAPI)
