"""Sessions (token families): login, refresh-token rotation with reuse detection, logout.

A refresh token is accepted only while it is its session's head (`current_jti`); each refresh
swaps the head atomically. The immediately previous head is accepted again within a short grace
window and answered with the current head, so honest races keep one valid head. Any other old
token is reuse: the session is revoked and the event logged (RFC 9700 §4.14).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Callable

from aiohttp import web

from ..config import GatewayConfig, SessionConfig, TokenConfig
from ..errors import Unauthorized
from ..request_keys import CLIENT
from ..storage import Rotation, Session, SessionStore, Store, User
from .revocation import RevocationView
from .tokens import TokenPair, TokenService

__all__ = [
    "BAD_CREDENTIALS",
    "SessionService",
    "client_of",
    "end_user_sessions",
    "prune_sessions",
    "revocation_window",
]

# One answer for an unknown user, a wrong password and a user disabled mid-login.
BAD_CREDENTIALS = "Invalid username or password"

log = logging.getLogger(__name__)
security_log = logging.getLogger("gateway.security")
# Longest stored user agent and address (the columns' widths on MySQL).
MAX_USER_AGENT = 512
MAX_ADDRESS = 64


@dataclasses.dataclass(frozen=True, slots=True)
class Client:
    """Who is on the other end of a login or refresh, as the session list shows it."""

    address: str = ""
    user_agent: str = ""

    @classmethod
    def seen(cls, address: str | None, user_agent: str | None) -> Client:
        """Clipped to the stored widths; control characters dropped (it is shown back)."""
        agent = "".join(c for c in (user_agent or "") if c.isprintable())
        return cls((address or "")[:MAX_ADDRESS], agent[:MAX_USER_AGENT])


def client_of(request: web.BaseRequest) -> Client:
    """The client of a request: its address (behind trusted proxies) and user agent."""
    return Client.seen(request.get(CLIENT), request.headers.get("User-Agent"))


@dataclasses.dataclass(frozen=True, slots=True)
class Refreshed:
    pair: TokenPair
    user_id: int
    # "rotated": a new head; "grace": the previous head re-presented within the window.
    outcome: str


def revocation_window(tokens: TokenConfig, sessions: SessionConfig) -> float:
    """How long a revoked session must stay known: until its last access token has expired."""
    return tokens.access_ttl + tokens.leeway + sessions.revocation_poll


async def prune_sessions(store: Store, config: GatewayConfig, now: float) -> int:
    """Delete sessions no token can use any more."""
    return await store.prune_sessions(
        revoked_before=now - revocation_window(config.tokens, config.sessions),
        expired_before=now - config.tokens.leeway,
    )


async def end_user_sessions(store: SessionStore, user_id: int, reason: str, now: float) -> int:
    """End every live session of a user (disabled, deleted, new password, admin); return how
    many. Their access tokens stop working once each process reloads its revocations."""
    ended = await store.revoke_user_sessions(user_id, reason=reason, now=now)
    if ended:
        log.info("ended %d session(s) user_id=%d reason=%s", ended, user_id, reason)
    return ended


# Not frozen and without slots: tests hold a refresh in flight by wrapping `refresh` on the
# instance (tests/client/test_client.py).
@dataclasses.dataclass(eq=False)
class SessionService:
    """Starts, rotates and ends sessions; the only code that writes session rows."""

    store: Store
    tokens: TokenService
    revocations: RevocationView
    config: GatewayConfig
    clock: Callable[[], float] = time.time

    async def prune(self) -> int:
        return await prune_sessions(self.store, self.config, self.clock())

    async def login(self, user: User, client: Client = Client()) -> TokenPair:
        now = self.clock()
        expires_at = now + self.config.sessions.max_lifetime
        session = Session(
            id=uuid.uuid4().hex,
            user_id=user.id,
            created_at=now,
            last_used_at=now,
            expires_at=expires_at,
            refresh_issued_at=int(now),
            refresh_expires_at=int(min(now + self.config.tokens.refresh_ttl, expires_at)),
            current_jti=uuid.uuid4().hex,
            login_address=client.address,
            login_user_agent=client.user_agent,
            last_address=client.address,
            last_user_agent=client.user_agent,
        )
        if not await self.store.create_session(session, password_hash=user.password_hash):
            raise Unauthorized(BAD_CREDENTIALS, token_presented=False, reason="credentials")
        log.info("login user_id=%d session_id=%s", user.id, session.id)
        if self.config.sessions.max_per_user:
            ended = await self.store.keep_newest_sessions(
                user.id, self.config.sessions.max_per_user, reason="session limit", now=now
            )
            if ended:
                log.info("session limit: ended %d oldest session(s) user_id=%d", ended, user.id)
                await self.revocations.reload()
        return self._pair(user, session)

    async def refresh(self, refresh_token: str, client: Client = Client()) -> Refreshed:
        grant = self.tokens.verify_refresh(refresh_token)
        # Two passes at most: a refresh that loses the race for the head re-reads once.
        for _ in range(2):
            session, user = await self._load(grant.session_id, grant.user_id)
            now = self.clock()
            if grant.token_id == session.current_jti:
                new_jti = uuid.uuid4().hex
                refresh_expires_at = int(
                    min(now + self.config.tokens.refresh_ttl, session.expires_at)
                )
                rotation = Rotation(
                    session.id,
                    user_id=user.id,
                    presented_jti=grant.token_id,
                    new_jti=new_jti,
                    now=now,
                    refresh_expires_at=refresh_expires_at,
                    address=client.address,
                    user_agent=client.user_agent,
                )
                if await self.store.rotate_session(rotation):
                    rotated = dataclasses.replace(
                        session,
                        current_jti=new_jti,
                        refresh_issued_at=int(now),
                        refresh_expires_at=refresh_expires_at,
                    )
                    return Refreshed(self._pair(user, rotated), user.id, "rotated")
                continue
            if self._within_grace(session, grant.token_id, now):
                return Refreshed(self._pair(user, session), user.id, "grace")
            break
        await self._revoke(session.id, "refresh token reuse")
        security_log.warning(
            "refresh token reuse detected: session revoked user_id=%d session_id=%s",
            session.user_id,
            session.id,
        )
        raise Unauthorized(
            "Refresh token was already used; the session has been revoked",
            token_presented=True,
            reason="reuse_detected",
        )

    async def end_user_sessions(self, user_id: int, reason: str) -> int:
        """End every live session of a user, effective in this process at once."""
        ended = await end_user_sessions(self.store, user_id, reason, self.clock())
        if ended:
            await self.revocations.reload()
        return ended

    async def live_sessions(self, user_id: int) -> list[Session]:
        """A user's sessions that a token can still use, oldest first."""
        now = self.clock()
        return [
            s
            for s in await self.store.list_sessions(user_id)
            if s.revoked_at is None and s.expires_at > now and s.refresh_expires_at > now
        ]

    async def end_session(self, user_id: int, session_id: str) -> bool:
        """End one live session of this user; False when there is none such (unknown, ended,
        or someone else's: the caller cannot tell which)."""
        session = await self.store.get_session(session_id)
        now = self.clock()
        if session is None or session.user_id != user_id or session.expires_at <= now:
            return False
        ended = await self._revoke(session_id, "ended by user")
        if ended:
            log.info("session ended by its user user_id=%d session_id=%s", user_id, session_id)
        return ended

    async def logout(self, session_id: str) -> bool:
        """End a session (idempotent: unknown and revoked sessions are fine); True when it was
        live until now."""
        if await self._revoke(session_id, "logout"):
            log.info("logout session_id=%s", session_id)
            return True
        return False

    async def _load(self, session_id: str, user_id: int) -> tuple[Session, User]:
        found = await self.store.get_session_with_user(session_id)
        if found is None or found[0].user_id != user_id:
            raise Unauthorized(
                "Unknown session; log in again", token_presented=True, reason="unknown_session"
            )
        session, user = found
        if session.revoked_at is not None:
            raise Unauthorized(
                "Session has been revoked; log in again", token_presented=True, reason="revoked"
            )
        if session.expires_at <= self.clock():
            raise Unauthorized(
                "Session has expired; log in again", token_presented=True, reason="session_expired"
            )
        if user is None or user.disabled:
            await self._revoke(session.id, "user disabled")
            raise Unauthorized(
                "User no longer exists or is disabled",
                token_presented=True,
                reason="user_disabled",
            )
        return session, user

    def _within_grace(self, session: Session, jti: str, now: float) -> bool:
        return (
            self.config.sessions.reuse_grace > 0
            and jti == session.previous_jti
            and session.rotated_at is not None
            and now - session.rotated_at <= self.config.sessions.reuse_grace
        )

    async def _revoke(self, session_id: str, reason: str) -> bool:
        revoked = await self.store.revoke_session(session_id, reason=reason, now=self.clock())
        self.revocations.add(session_id)
        return revoked

    def _pair(self, user: User, session: Session) -> TokenPair:
        access, expires_in = self.tokens.access_token(
            user_id=user.id,
            username=user.username,
            session_id=session.id,
            not_after=session.expires_at,
            roles=user.roles,
        )
        refresh = self.tokens.refresh_token(
            user_id=user.id,
            session_id=session.id,
            jti=session.current_jti,
            issued_at=session.refresh_issued_at,
            expires_at=session.refresh_expires_at,
        )
        now = int(self.clock())
        return TokenPair(access, refresh, expires_in, max(0, session.refresh_expires_at - now))
