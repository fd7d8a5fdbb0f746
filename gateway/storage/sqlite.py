"""SQLite backend (the embedded default) on aiosqlite."""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite
from yarl import URL

from ..errors import StorageUnavailable
from .sql import Row, SqlStore

__all__ = ["SqliteStore"]

log = logging.getLogger(__name__)
_BUSY_RETRY_SECONDS = 5.0

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS gateway_users (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            username TEXT NOT NULL UNIQUE,
            password_hash TEXT NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
    ),
    (
        """CREATE TABLE IF NOT EXISTS gateway_sessions (
            id TEXT NOT NULL PRIMARY KEY,
            user_id INTEGER NOT NULL,
            created_at REAL NOT NULL,
            last_used_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            refresh_issued_at INTEGER NOT NULL,
            refresh_expires_at INTEGER NOT NULL,
            current_jti TEXT NOT NULL,
            previous_jti TEXT,
            rotated_at REAL,
            revoked_at REAL,
            revoked_reason TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS gateway_sessions_user ON gateway_sessions (user_id)",
        "CREATE INDEX IF NOT EXISTS gateway_sessions_revoked ON gateway_sessions (revoked_at)",
        "CREATE INDEX IF NOT EXISTS gateway_sessions_expires ON gateway_sessions (expires_at)",
    ),
    (
        "ALTER TABLE gateway_users ADD COLUMN roles TEXT NOT NULL DEFAULT ''",
        # Names differing only in case would be one user to a backend with a folding collation.
        "ALTER TABLE gateway_users ADD COLUMN username_folded TEXT",
        "UPDATE gateway_users SET username_folded = lower(username)",
        "CREATE UNIQUE INDEX gateway_users_folded ON gateway_users (username_folded)",
    ),
    (
        # Where each session was opened and last refreshed from (GET /user/sessions).
        "ALTER TABLE gateway_sessions ADD COLUMN login_address TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE gateway_sessions ADD COLUMN login_user_agent TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE gateway_sessions ADD COLUMN last_address TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE gateway_sessions ADD COLUMN last_user_agent TEXT NOT NULL DEFAULT ''",
    ),
    (
        # Security events (gateway audit list); pruned after audit.retention.
        """CREATE TABLE IF NOT EXISTS audit_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            outcome TEXT NOT NULL,
            user_id INTEGER,
            username TEXT NOT NULL DEFAULT '',
            session_id TEXT NOT NULL DEFAULT '',
            address TEXT NOT NULL DEFAULT '',
            user_agent TEXT NOT NULL DEFAULT '',
            request_id TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX IF NOT EXISTS audit_events_at ON audit_events (at)",
        "CREATE INDEX IF NOT EXISTS audit_events_user ON audit_events (username, at)",
    ),
)


def sqlite_path(url: str) -> Path:
    """sqlite:///relative.db or sqlite:////absolute/path.db (as SQLAlchemy spells them)."""
    return Path(URL(url).path[1:])


class SqliteStore(SqlStore):
    migrations = _MIGRATIONS

    def __init__(self, url: str) -> None:
        self._path = sqlite_path(url)
        self._connection: aiosqlite.Connection | None = None

    async def open(self) -> None:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # Tried with plain sqlite3 first: an aiosqlite connect that fails leaves its worker
            # thread to report into the closed event loop, a traceback at exit.
            await asyncio.to_thread(_check_opens, self._path)
            conn = await aiosqlite.connect(self._path, isolation_level=None)
        except (OSError, ValueError, sqlite3.Error) as exc:
            raise StorageUnavailable(f"cannot open SQLite database {self._path}: {exc}") from exc
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            await conn.close()  # an open connection's thread keeps the process from exiting
            raise StorageUnavailable(f"cannot open SQLite database {self._path}: {exc}") from exc
        self._connection = conn

    async def close(self) -> None:
        if self._connection is not None:
            conn, self._connection = self._connection, None
            await conn.close()

    @property
    def _conn(self) -> aiosqlite.Connection:
        if self._connection is None:
            raise StorageUnavailable("The database connection is not open")
        return self._connection

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        try:
            async with self._conn.execute(sql, tuple(params)) as cur:
                row: Row | None = await cur.fetchone()
                return row
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            async with self._conn.execute(sql, tuple(params)) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> tuple[int, int | None]:
        # A write that finds another process's newer snapshot fails with SQLITE_BUSY at once,
        # without waiting for busy_timeout; it was not applied, so it is safe to try again.
        delay, deadline = 0.005, time.monotonic() + _BUSY_RETRY_SECONDS
        while True:
            try:
                async with self._conn.execute(sql, tuple(params)) as cur:
                    return cur.rowcount, cur.lastrowid
            except sqlite3.IntegrityError:
                raise
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() + delay > deadline:
                    raise _unavailable(exc) from exc
                await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter
                delay = min(delay * 2, 0.1)
            except sqlite3.Error as exc:
                raise _unavailable(exc) from exc

    async def insert_unique(self, sql: str, params: Sequence[Any]) -> int | None:
        try:
            _, row_id = await self.execute(sql, params)
        except sqlite3.IntegrityError:
            return None
        return row_id

    async def ping(self) -> None:
        await self.fetch_one("SELECT 1")

    async def apply_migrations(self) -> int:
        # BEGIN IMMEDIATE takes the write lock, so processes sharing the file migrate once.
        await self.execute("BEGIN IMMEDIATE")
        try:
            await self.execute(
                "CREATE TABLE IF NOT EXISTS gateway_schema (version INTEGER NOT NULL)"
            )
            version = await self.run_pending(await self.schema_version())
        except BaseException:
            await self.execute("ROLLBACK")
            raise
        await self.execute("COMMIT")
        return version


def _check_opens(path: Path) -> None:
    """Open the file and read its header, as the first statement will."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA schema_version")
    finally:
        conn.close()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def _unavailable(exc: sqlite3.Error) -> StorageUnavailable:
    log.error("database error: %s %s", type(exc).__name__, exc.args[:1])
    return StorageUnavailable()
