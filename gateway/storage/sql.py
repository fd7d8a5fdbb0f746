"""The queries both SQL backends share; each backend supplies a driver and its DDL."""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..errors import StorageUnavailable
from .base import SCHEMA_VERSION, AuditEvent, AuditQuery, Rotation, Session, User, UserExists

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["SqlStore"]

log = logging.getLogger(__name__)
Row = Sequence[Any]
R = TypeVar("R", bound="DataclassInstance")


def _or_none(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else convert(value)


# What turns a driver's value into a record's field, by the field's declared type (a `str`
# field reads NULL as "", as a column with DEFAULT '' would hold).
_FROM_COLUMN: dict[str, Callable[[Any], Any]] = {
    "str": lambda value: "" if value is None else str(value),
    "int": int,
    "float": float,
    "str | None": _or_none(str),
    "int | None": _or_none(int),
    "float | None": _or_none(float),
}


class _Columns(Generic[R]):
    """A table whose columns are a record's fields, named and ordered as in the dataclass."""

    def __init__(self, record: type[R]) -> None:
        self._record = record
        self.names = tuple(f.name for f in fields(record))
        self._converters = tuple(_FROM_COLUMN[str(f.type)] for f in fields(record))
        self.listed = ", ".join(self.names)
        self.placeholders = ", ".join("?" for _ in self.names)

    def prefixed(self, alias: str) -> str:
        """The columns as `alias.column, ...`, for a join."""
        return ", ".join(f"{alias}.{name}" for name in self.names)

    def values(self, record: R) -> tuple[Any, ...]:
        return tuple(getattr(record, name) for name in self.names)

    def read(self, row: Row) -> R:
        return self._record(
            *(convert(value) for convert, value in zip(self._converters, row, strict=True))
        )


_SESSIONS = _Columns(Session)
_AUDIT_EVENTS = _Columns(AuditEvent)
# Users are read by position: `roles` is stored as one comma-separated column.
_USER_COLUMNS = "id, username, password_hash, disabled, created_at, roles"


class SqlStore(abc.ABC):
    """UserStore and SessionStore over a DB-API style driver. Queries use `?` placeholders."""

    # migrations[n] holds the statements that take the schema from version n to n + 1.
    migrations: Sequence[Sequence[str]] = ()

    @abc.abstractmethod
    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    @abc.abstractmethod
    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    @abc.abstractmethod
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> tuple[int, int | None]:
        """Run a statement; return (rows affected, last inserted id)."""

    @abc.abstractmethod
    async def insert_unique(self, sql: str, params: Sequence[Any]) -> int | None:
        """Insert a row; None when it violates a unique key."""

    @abc.abstractmethod
    async def apply_migrations(self) -> int:
        """Run pending migrations under the backend's migration lock."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def migrate(self) -> int:
        version = await self.apply_migrations()
        if version > SCHEMA_VERSION:
            raise StorageUnavailable(
                f"the database schema is version {version}, newer than this gateway "
                f"understands ({SCHEMA_VERSION}); upgrade the gateway"
            )
        return version

    async def run_pending(self, current: int) -> int:
        """Apply migrations after `current`; the caller holds the lock and made the table."""
        for version in range(current, len(self.migrations)):
            for statement in self.migrations[version]:
                await self.execute(statement)
            await self.execute("INSERT INTO gateway_schema (version) VALUES (?)", (version + 1,))
            log.info("database schema migrated to version %d", version + 1)
        return max(current, len(self.migrations))

    async def schema_version(self) -> int:
        row = await self.fetch_one("SELECT MAX(version) FROM gateway_schema")
        return int(row[0]) if row and row[0] is not None else 0

    async def get_user(self, user_id: int) -> User | None:
        return await self._user_where("id = ?", user_id)

    async def get_user_by_name(self, username: str) -> User | None:
        user = await self._user_where("username = ?", username)
        # Guard against collations that pad or fold: the name must match to the byte.
        return user if user is not None and user.username == username else None

    async def add_user(self, username: str, password_hash: str) -> User:
        now = time.time()
        user_id = await self.insert_unique(
            "INSERT INTO gateway_users"
            " (username, username_folded, password_hash, disabled, created_at, updated_at)"
            " VALUES (?, ?, ?, 0, ?, ?)",
            (username, username.lower(), password_hash, now, now),
        )
        if user_id is None:
            raise UserExists(username)
        return User(user_id, username, password_hash, False, now)

    async def list_users(self) -> list[User]:
        rows = await self.fetch_all(
            f"SELECT {_USER_COLUMNS} FROM gateway_users ORDER BY id"  # noqa: S608 - constant
        )
        return [_user_from_row(row) for row in rows]

    async def _user_where(self, condition: str, value: object) -> User | None:
        row = await self.fetch_one(
            f"SELECT {_USER_COLUMNS} FROM gateway_users WHERE {condition}",  # noqa: S608 - constant
            (value,),
        )
        return None if row is None else _user_from_row(row)

    async def set_disabled(self, username: str, disabled: bool) -> bool:
        user = await self.get_user_by_name(username)
        if user is None:
            return False
        await self.execute(
            "UPDATE gateway_users SET disabled = ?, updated_at = ? WHERE id = ?",
            (int(disabled), time.time(), user.id),
        )
        return True

    async def set_password_hash(
        self, user_id: int, password_hash: str, *, replacing: str | None = None
    ) -> bool:
        if replacing is None:
            rows, _ = await self.execute(
                "UPDATE gateway_users SET password_hash = ?, updated_at = ? WHERE id = ?",
                (password_hash, time.time(), user_id),
            )
        else:
            rows, _ = await self.execute(
                "UPDATE gateway_users SET password_hash = ?, updated_at = ?"
                " WHERE id = ? AND password_hash = ?",
                (password_hash, time.time(), user_id, replacing),
            )
        return rows == 1

    async def set_roles(self, user_id: int, roles: tuple[str, ...]) -> None:
        await self.execute(
            "UPDATE gateway_users SET roles = ?, updated_at = ? WHERE id = ?",
            (",".join(sorted(set(roles))), time.time(), user_id),
        )

    async def delete_user(self, user_id: int) -> bool:
        rows, _ = await self.execute("DELETE FROM gateway_users WHERE id = ?", (user_id,))
        return rows > 0

    # --- sessions -------------------------------------------------------------------------

    async def create_session(self, session: Session, *, password_hash: str) -> bool:
        # INSERT ... SELECT: the session is created only if the user still has the password
        # that was just verified and is still enabled, so a password change or a disable that
        # lands while the login was hashing cannot be outrun.
        rows, _ = await self.execute(
            f"INSERT INTO gateway_sessions ({_SESSIONS.listed})"  # noqa: S608 - constant columns
            f" SELECT {_SESSIONS.placeholders} FROM gateway_users"
            " WHERE id = ? AND password_hash = ? AND disabled = 0",
            (*_SESSIONS.values(session), session.user_id, password_hash),
        )
        return rows == 1

    async def get_session(self, session_id: str) -> Session | None:
        row = await self.fetch_one(
            f"SELECT {_SESSIONS.listed} FROM gateway_sessions WHERE id = ?",  # noqa: S608
            (session_id,),
        )
        return None if row is None else _SESSIONS.read(row)

    async def get_session_with_user(self, session_id: str) -> tuple[Session, User | None] | None:
        user_columns = ", ".join(f"u.{c}" for c in _USER_COLUMNS.split(", "))
        row = await self.fetch_one(
            f"SELECT {_SESSIONS.prefixed('s')}, {user_columns}"  # noqa: S608 - constant columns
            " FROM gateway_sessions s"
            " LEFT JOIN gateway_users u ON u.id = s.user_id WHERE s.id = ?",
            (session_id,),
        )
        if row is None:
            return None
        width = len(_SESSIONS.names)
        user_row = row[width:]
        user = None if user_row[0] is None else _user_from_row(user_row)
        return _SESSIONS.read(row[:width]), user

    async def rotate_session(self, rotation: Rotation) -> bool:
        # One conditional UPDATE is the compare-and-swap: of any number of concurrent refreshes
        # of one token, on any number of processes, exactly one matches `current_jti`.
        # (MySQL assigns left to right, so previous_jti takes the old head first.)
        rows, _ = await self.execute(
            "UPDATE gateway_sessions SET previous_jti = current_jti, current_jti = ?,"
            " rotated_at = ?, last_used_at = ?, refresh_issued_at = ?, refresh_expires_at = ?,"
            " last_address = ?, last_user_agent = ?"
            " WHERE id = ? AND user_id = ? AND current_jti = ? AND revoked_at IS NULL"
            " AND expires_at > ?",
            (
                rotation.new_jti,
                rotation.now,
                rotation.now,
                int(rotation.now),
                rotation.refresh_expires_at,
                rotation.address,
                rotation.user_agent,
                rotation.session_id,
                rotation.user_id,
                rotation.presented_jti,
                rotation.now,
            ),
        )
        return rows == 1

    async def revoke_session(self, session_id: str, *, reason: str, now: float) -> bool:
        return await self._revoke_live("id = ?", session_id, reason=reason, now=now) == 1

    async def revoke_user_sessions(self, user_id: int, *, reason: str, now: float) -> int:
        return await self._revoke_live("user_id = ?", user_id, reason=reason, now=now)

    async def _revoke_live(self, condition: str, value: object, *, reason: str, now: float) -> int:
        rows, _ = await self.execute(
            "UPDATE gateway_sessions SET revoked_at = ?, revoked_reason = ?"  # noqa: S608 - constant
            f" WHERE {condition} AND revoked_at IS NULL",
            (now, reason, value),
        )
        return rows

    async def keep_newest_sessions(
        self, user_id: int, keep: int, *, reason: str, now: float
    ) -> int:
        # The kept ids go through a derived table: MySQL and MariaDB refuse LIMIT inside IN and
        # a subquery on the table being updated, but accept both once materialized.
        live = "user_id = ? AND revoked_at IS NULL AND expires_at > ? AND refresh_expires_at > ?"
        rows, _ = await self.execute(
            "UPDATE gateway_sessions SET revoked_at = ?, revoked_reason = ?"  # noqa: S608
            f" WHERE {live} AND id NOT IN (SELECT id FROM (SELECT id FROM gateway_sessions"
            f" WHERE {live} ORDER BY created_at DESC, id DESC LIMIT ?) AS kept)",
            (now, reason, user_id, now, now, user_id, now, now, keep),
        )
        return rows

    async def list_sessions(self, user_id: int) -> list[Session]:
        rows = await self.fetch_all(
            f"SELECT {_SESSIONS.listed} FROM gateway_sessions"  # noqa: S608
            " WHERE user_id = ? ORDER BY created_at",
            (user_id,),
        )
        return [_SESSIONS.read(row) for row in rows]

    async def revoked_since(self, since: float) -> list[str]:
        rows = await self.fetch_all(
            "SELECT id FROM gateway_sessions WHERE revoked_at >= ?", (since,)
        )
        return [str(row[0]) for row in rows]

    async def prune_sessions(self, *, revoked_before: float, expired_before: float) -> int:
        rows, _ = await self.execute(
            "DELETE FROM gateway_sessions WHERE revoked_at < ? OR expires_at < ?"
            " OR refresh_expires_at < ?",
            (revoked_before, expired_before, expired_before),
        )
        return rows

    # --- audit events ------------------------------------------------------------------------

    async def add_audit_events(self, events: list[AuditEvent]) -> None:
        for event in events:
            await self.execute(
                f"INSERT INTO audit_events ({_AUDIT_EVENTS.listed})"  # noqa: S608 - constant columns
                f" VALUES ({_AUDIT_EVENTS.placeholders})",
                _AUDIT_EVENTS.values(event),
            )

    async def list_audit_events(self, query: AuditQuery | None = None) -> list[AuditEvent]:
        query = query or AuditQuery()
        where: list[str] = ["at >= ?"]
        params: list[object] = [query.since]
        if query.username is not None:
            where.append("username = ?")
            params.append(query.username)
        if query.kinds:
            where.append(f"kind IN ({', '.join('?' for _ in query.kinds)})")
            params.extend(query.kinds)
        rows = await self.fetch_all(
            f"SELECT {_AUDIT_EVENTS.listed} FROM audit_events"  # noqa: S608 - placeholders only
            f" WHERE {' AND '.join(where)} ORDER BY at DESC, id DESC LIMIT {int(query.limit)}",
            params,
        )
        return [_AUDIT_EVENTS.read(row) for row in reversed(rows)]

    async def prune_audit_events(self, *, before: float) -> int:
        rows, _ = await self.execute("DELETE FROM audit_events WHERE at < ?", (before,))
        return rows


def _user_from_row(row: Row) -> User:
    roles = tuple(r for r in str(row[5]).split(",") if r)
    return User(int(row[0]), str(row[1]), str(row[2]), bool(row[3]), float(row[4]), roles)
