"""The queries both SQL backends share; each backend supplies a driver and its DDL."""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Sequence
from typing import Any

from .base import SCHEMA_VERSION, User, UserExists

__all__ = ["SqlUserStore"]

log = logging.getLogger(__name__)
Row = Sequence[Any]


class SqlUserStore(abc.ABC):
    """UserStore over a DB-API style driver. Queries use `?` placeholders."""

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
            raise RuntimeError(
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
        row = await self.fetch_one(
            "SELECT id, username, password_hash, disabled, created_at FROM gateway_users"
            " WHERE id = ?",
            (user_id,),
        )
        return None if row is None else _user_from_row(row)

    async def get_user_by_name(self, username: str) -> User | None:
        row = await self.fetch_one(
            "SELECT id, username, password_hash, disabled, created_at FROM gateway_users"
            " WHERE username = ?",
            (username,),
        )
        user = None if row is None else _user_from_row(row)
        # Guard against collations that pad or fold: the name must match to the byte.
        return user if user is not None and user.username == username else None

    async def add_user(self, username: str, password_hash: str) -> User:
        now = time.time()
        user_id = await self.insert_unique(
            "INSERT INTO gateway_users (username, password_hash, disabled, created_at, updated_at)"
            " VALUES (?, ?, 0, ?, ?)",
            (username, password_hash, now, now),
        )
        if user_id is None:
            raise UserExists(username)
        return User(user_id, username, password_hash, False, now)

    async def list_users(self) -> list[User]:
        rows = await self.fetch_all(
            "SELECT id, username, password_hash, disabled, created_at FROM gateway_users"
            " ORDER BY id"
        )
        return [_user_from_row(row) for row in rows]

    async def set_disabled(self, username: str, disabled: bool) -> bool:
        user = await self.get_user_by_name(username)
        if user is None:
            return False
        await self.execute(
            "UPDATE gateway_users SET disabled = ?, updated_at = ? WHERE id = ?",
            (int(disabled), time.time(), user.id),
        )
        return True

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        await self.execute(
            "UPDATE gateway_users SET password_hash = ?, updated_at = ? WHERE id = ?",
            (password_hash, time.time(), user_id),
        )


def _user_from_row(row: Row) -> User:
    return User(int(row[0]), str(row[1]), str(row[2]), bool(row[3]), float(row[4]))
