"""The user and session store interfaces every backend implements, and their records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "SCHEMA_VERSION",
    "AuditEvent",
    "AuditQuery",
    "AuditStore",
    "Rotation",
    "Session",
    "SessionStore",
    "Store",
    "User",
    "UserExists",
    "UserStore",
]

SCHEMA_VERSION = 5


class UserExists(Exception):
    """A user with that name already exists."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    password_hash: str = field(repr=False)
    disabled: bool
    created_at: float
    roles: tuple[str, ...] = ()


class UserStore(Protocol):
    """What the gateway needs from a database. Both backends behave the same."""

    async def open(self) -> None:
        """Connect; raises StorageUnavailable when the database cannot be reached."""
        ...

    async def migrate(self) -> int:
        """Apply pending schema migrations; return the schema version now in force."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    async def get_user(self, user_id: int) -> User | None: ...

    async def get_user_by_name(self, username: str) -> User | None: ...

    async def add_user(self, username: str, password_hash: str) -> User: ...

    async def list_users(self) -> list[User]: ...

    async def set_disabled(self, username: str, disabled: bool) -> bool:
        """Return False when there is no such user."""
        ...

    async def set_password_hash(
        self, user_id: int, password_hash: str, *, replacing: str | None = None
    ) -> bool:
        """Set a password hash; with `replacing`, only if that is still the stored hash (a
        rehash at login must not overwrite a password changed meanwhile)."""
        ...

    async def delete_user(self, user_id: int) -> bool: ...

    async def set_roles(self, user_id: int, roles: tuple[str, ...]) -> None: ...


@dataclass(frozen=True, slots=True)
class Session:
    """A login: one family of refresh tokens with a single valid head (`current_jti`)."""

    id: str
    user_id: int
    created_at: float
    last_used_at: float
    # Absolute end: rotation never extends it.
    expires_at: float
    # The head refresh token's own iat/exp (exp slides with each rotation, capped by expires_at).
    refresh_issued_at: int
    refresh_expires_at: int
    current_jti: str
    # The head before the last rotation, accepted again within the grace window.
    previous_jti: str | None = None
    rotated_at: float | None = None
    revoked_at: float | None = None
    revoked_reason: str | None = None
    # Where the login came from, and where the last refresh did (for the user's session list).
    login_address: str = ""
    login_user_agent: str = ""
    last_address: str = ""
    last_user_agent: str = ""


@dataclass(frozen=True, slots=True)
class Rotation:
    """One refresh: swap `session_id`'s head from `presented_jti` to `new_jti` at `now`, and
    record the client that refreshed."""

    session_id: str
    user_id: int
    presented_jti: str
    new_jti: str
    now: float
    refresh_expires_at: int
    address: str = ""
    user_agent: str = ""


class SessionStore(Protocol):
    """Sessions (token families). `rotate_session` is the atomic compare-and-swap of the head."""

    async def create_session(self, session: Session, *, password_hash: str) -> bool:
        """Insert a session if its user is enabled and still has `password_hash`."""
        ...

    async def get_session(self, session_id: str) -> Session | None: ...

    async def get_session_with_user(self, session_id: str) -> tuple[Session, User | None] | None:
        """A session and its user (None when the user was deleted), in one round trip."""
        ...

    async def rotate_session(self, rotation: Rotation) -> bool:
        """Swap the head from `presented_jti` to `new_jti` if it is still the head of a live
        session (recording the client that refreshed); False when another refresh (or a
        revocation) got there first."""
        ...

    async def revoke_session(self, session_id: str, *, reason: str, now: float) -> bool:
        """Revoke a live session; False when it was unknown or already revoked."""
        ...

    async def revoke_user_sessions(self, user_id: int, *, reason: str, now: float) -> int: ...

    async def keep_newest_sessions(
        self, user_id: int, keep: int, *, reason: str, now: float
    ) -> int:
        """Revoke a user's live sessions but the `keep` newest, in one statement (so logins on
        any number of processes at once still leave at most `keep`); return how many."""
        ...

    async def list_sessions(self, user_id: int) -> list[Session]: ...

    async def revoked_since(self, since: float) -> list[str]:
        """Ids of sessions revoked at or after `since`."""
        ...

    async def prune_sessions(self, *, revoked_before: float, expired_before: float) -> int:
        """Delete sessions revoked before one bound or expired before the other."""
        ...


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One security event. Never a token or a password: ids, names and reason classes only."""

    at: float
    kind: str
    outcome: str = "success"
    user_id: int | None = None
    username: str = ""
    session_id: str = ""
    address: str = ""
    user_agent: str = ""
    request_id: str = ""
    # A reason class or what changed ("wrong_password", "role admin added"), never a secret.
    detail: str = ""


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Which audit events to list: at or after `since`, of `username` when given, of `kinds`
    when any; at most `limit`."""

    since: float = 0.0
    username: str | None = None
    kinds: tuple[str, ...] = ()
    limit: int = 1000


class AuditStore(Protocol):
    """The `audit_events` table."""

    async def add_audit_events(self, events: list[AuditEvent]) -> None: ...

    async def list_audit_events(self, query: AuditQuery | None = None) -> list[AuditEvent]:
        """The events `query` (all: None) selects, oldest first (the newest `query.limit`)."""
        ...

    async def prune_audit_events(self, *, before: float) -> int: ...


class Store(UserStore, SessionStore, AuditStore, Protocol):
    """One database holds both."""
