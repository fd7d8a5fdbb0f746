"""A user's own sessions: `GET /user/sessions` lists the live ones, `DELETE
/user/sessions/{id}` ends one, and `POST /user/logout {"all": true}` ends them all.

Each is answered for the caller only (see callers): another user's session id is a 404, the
same as an unknown one, so ids cannot be probed. Ending a session revokes it as logout does:
its refresh token stops at once, its access tokens within the revocation bound
(`sessions.revocation_poll`; at once in the process that ended it).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ..errors import MethodNotAllowed, NotFound
from ..request_keys import ROUTE_NAME, USER_ID
from ..storage import Session
from .audit import LOGOUT, SESSION_ENDED, AuditTrail
from .callers import Callers
from .sessions import SessionService

__all__ = ["AccountEndpoints"]

_SESSION_ID = re.compile(r"[0-9a-f]{32}")
_NO_STORE = {"Cache-Control": "no-store"}


class AccountEndpoints:
    """The handlers of /user/sessions, /user/sessions/{id} and logout everywhere."""

    def __init__(self, *, callers: Callers, sessions: SessionService, audit: AuditTrail) -> None:
        self._callers = callers
        self._sessions = sessions
        self._audit = audit

    async def list_sessions(self, request: web.Request) -> web.Response:
        """GET: the caller's live sessions, oldest first, the caller's own marked `current`."""
        request[ROUTE_NAME] = "sessions"
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(
                "Use GET to list your sessions", allowed=frozenset({"GET", "HEAD"})
            )
        identity = await self._callers.identify(request)
        request[USER_ID] = identity.user_id
        live = await self._sessions.live_sessions(int(identity.user_id))
        body = {"sessions": [_described(s, current=s.id == identity.session_id) for s in live]}
        return web.json_response(body, headers=_NO_STORE)

    async def end_session(self, request: web.Request) -> web.Response:
        """DELETE: end one of the caller's sessions (the caller's own one included)."""
        request[ROUTE_NAME] = "session"
        if request.method != "DELETE":
            raise MethodNotAllowed("Use DELETE to end a session", allowed=frozenset({"DELETE"}))
        identity = await self._callers.identify(request)
        request[USER_ID] = identity.user_id
        session_id = request.match_info["session_id"]
        if not (
            _SESSION_ID.fullmatch(session_id)
            and await self._sessions.end_session(int(identity.user_id), session_id)
        ):
            raise NotFound("You have no live session with that id")
        self._audit.record(
            SESSION_ENDED,
            request,
            user_id=identity.user_id,
            username=identity.username,
            session_id=session_id,
            detail="by user",
        )
        if session_id == identity.session_id:
            self._callers.ended(request)
        return web.json_response({"message": "Session ended"}, headers=_NO_STORE)

    async def logout_everywhere(self, request: web.Request) -> web.Response:
        """POST /user/logout {"all": true}: end every session of the caller."""
        identity = await self._callers.identify(request)
        request[USER_ID] = identity.user_id
        ended = await self._sessions.end_user_sessions(int(identity.user_id), "logout everywhere")
        self._callers.ended(request)
        self._audit.record(
            LOGOUT,
            request,
            user_id=identity.user_id,
            username=identity.username,
            session_id=identity.session_id,
            detail=f"everywhere: {ended} session(s)",
        )
        return web.json_response(
            {"message": "Logged out everywhere", "ended": ended}, headers=_NO_STORE
        )


def _described(session: Session, *, current: bool) -> dict[str, Any]:
    return {
        "id": session.id,
        "created_at": _iso(session.created_at),
        "last_used_at": _iso(session.last_used_at),
        "expires_at": _iso(session.expires_at),
        "login": {"address": session.login_address, "user_agent": session.login_user_agent},
        "last_refresh": {"address": session.last_address, "user_agent": session.last_user_agent},
        "current": current,
    }


def _iso(timestamp: float) -> str:
    return (
        datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )
