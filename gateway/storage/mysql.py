"""MySQL / MariaDB backend on an aiomysql connection pool."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiomysql
import pymysql
from yarl import URL

from ..errors import StorageUnavailable
from .sql import Row, SqlStore

__all__ = ["MySqlStore", "create_mysql_database"]

log = logging.getLogger(__name__)
_DB_NAME = re.compile(r"[A-Za-z0-9_$]{1,64}")
_DEADLOCK = 1213
_DEADLOCK_RETRIES = 5
_DUPLICATE_KEY = 1062

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # utf8mb4_bin: user names compare to the byte, as in SQLite.
        """CREATE TABLE IF NOT EXISTS gateway_users (
            id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            username VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
            password_hash VARCHAR(255) NOT NULL,
            disabled TINYINT(1) NOT NULL DEFAULT 0,
            created_at DOUBLE NOT NULL,
            updated_at DOUBLE NOT NULL,
            UNIQUE KEY gateway_users_username (username)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    ),
    (
        """CREATE TABLE IF NOT EXISTS gateway_sessions (
            id CHAR(32) CHARACTER SET ascii NOT NULL PRIMARY KEY,
            user_id BIGINT UNSIGNED NOT NULL,
            created_at DOUBLE NOT NULL,
            last_used_at DOUBLE NOT NULL,
            expires_at DOUBLE NOT NULL,
            refresh_issued_at BIGINT NOT NULL,
            refresh_expires_at BIGINT NOT NULL,
            current_jti CHAR(32) CHARACTER SET ascii NOT NULL,
            previous_jti CHAR(32) CHARACTER SET ascii NULL,
            rotated_at DOUBLE NULL,
            revoked_at DOUBLE NULL,
            revoked_reason VARCHAR(64) NULL,
            KEY gateway_sessions_user (user_id),
            KEY gateway_sessions_revoked (revoked_at),
            KEY gateway_sessions_expires (expires_at)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    ),
    (
        "ALTER TABLE gateway_users ADD COLUMN roles VARCHAR(1024) NOT NULL DEFAULT ''",
        # Names differing only in case would be one user to a backend with a folding collation.
        "ALTER TABLE gateway_users ADD COLUMN username_folded VARCHAR(64) CHARACTER SET ascii NULL",
        "UPDATE gateway_users SET username_folded = LOWER(username)",
        "ALTER TABLE gateway_users ADD UNIQUE KEY gateway_users_folded (username_folded)",
    ),
    (
        # Where each session was opened and last refreshed from (GET /user/sessions).
        (
            "ALTER TABLE gateway_sessions ADD COLUMN login_address VARCHAR(64) NOT NULL DEFAULT '',"
            " ADD COLUMN login_user_agent VARCHAR(512) NOT NULL DEFAULT '',"
            " ADD COLUMN last_address VARCHAR(64) NOT NULL DEFAULT '',"
            " ADD COLUMN last_user_agent VARCHAR(512) NOT NULL DEFAULT ''"
        ),
    ),
    (
        # Security events (gateway audit list); pruned after audit.retention.
        """CREATE TABLE IF NOT EXISTS audit_events (
            id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
            at DOUBLE NOT NULL,
            kind VARCHAR(64) CHARACTER SET ascii NOT NULL,
            outcome VARCHAR(32) CHARACTER SET ascii NOT NULL,
            user_id BIGINT UNSIGNED NULL,
            username VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT '',
            session_id VARCHAR(32) CHARACTER SET ascii NOT NULL DEFAULT '',
            address VARCHAR(64) NOT NULL DEFAULT '',
            user_agent VARCHAR(512) NOT NULL DEFAULT '',
            request_id VARCHAR(128) NOT NULL DEFAULT '',
            detail VARCHAR(256) NOT NULL DEFAULT '',
            KEY audit_events_at (at),
            KEY audit_events_user (username, at)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
    ),
)


def _connect_args(url: str) -> dict[str, Any]:
    parsed = URL(url)
    database = parsed.path.strip("/")
    if not _DB_NAME.fullmatch(database):
        raise ValueError(f"database name {database!r} must be letters, digits, '_' or '$'")
    return {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 3306,
        "user": parsed.user or "root",
        "password": parsed.password or "",
        "db": database,
    }


async def create_mysql_database(url: str, *, connect_timeout: float = 5.0) -> bool:
    """CREATE DATABASE IF NOT EXISTS; False when the account may not (the caller goes on)."""
    args = _connect_args(url)
    database = args.pop("db")
    try:
        async with asyncio.timeout(connect_timeout):
            conn = await aiomysql.connect(**args, connect_timeout=connect_timeout, autocommit=True)
    except (pymysql.err.MySQLError, OSError) as exc:
        raise StorageUnavailable(
            f"cannot connect to MySQL at {args['host']}:{args['port']}: "
            f"{_reason(exc, connect_timeout)}"
        ) from exc
    try:
        async with conn.cursor() as cur:
            # Checked first: CREATE DATABASE IF NOT EXISTS on an existing one makes aiomysql
            # print MySQL's "database exists" note as a Python warning.
            await cur.execute(
                "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (database,)
            )
            if await cur.fetchone() is None:
                # IF NOT EXISTS still: another process may create it in between.
                await cur.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4"
                )
        return True
    except pymysql.err.MySQLError as exc:
        log.warning("could not create database %s (%s); assuming it exists", database, exc.args[0])
        return False
    finally:
        conn.close()


def _reason(exc: BaseException, timeout: float) -> str:
    # aiomysql's connect_timeout bounds the TCP connect only; the asyncio.timeout around it
    # also bounds a server that accepts but never greets (TimeoutError, with no message).
    if isinstance(exc, TimeoutError) and not exc.args:
        return f"no answer within {timeout:g}s"
    return str(exc.args[-1] if exc.args else exc)


class _Deadlock(StorageUnavailable):
    """A statement InnoDB chose as a deadlock's victim (and rolled back)."""


class MySqlStore(SqlStore):
    migrations = _MIGRATIONS

    def __init__(self, url: str, *, pool_size: int = 10, timeout: float = 5.0) -> None:
        self._args = _connect_args(url)
        self._pool_size = pool_size
        self._timeout = timeout
        self._pool: Any = None

    async def open(self) -> None:
        args = self._args
        try:
            async with asyncio.timeout(self._timeout):
                self._pool = await aiomysql.create_pool(
                    **args,
                    minsize=1,
                    maxsize=self._pool_size,
                    autocommit=True,
                    charset="utf8mb4",
                    connect_timeout=self._timeout,
                    pool_recycle=3600,
                )
        except (pymysql.err.MySQLError, OSError) as exc:
            raise StorageUnavailable(
                f"cannot connect to MySQL database {args['db']!r} at "
                f"{args['host']}:{args['port']}: {_reason(exc, self._timeout)}"
            ) from exc

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()
            await pool.wait_closed()

    @asynccontextmanager
    async def _cursor(self) -> AsyncIterator[Any]:
        # The pool this connection came from: close() may swap self._pool meanwhile, and the
        # old pool's wait_closed() waits for this connection to come back to it.
        pool = self._pool
        if pool is None:
            raise StorageUnavailable("The database connection is not open")
        try:
            async with asyncio.timeout(self._timeout):
                conn = await pool.acquire()
        except (pymysql.err.MySQLError, OSError, TimeoutError) as exc:
            log.error("database unreachable: %s %s", type(exc).__name__, exc.args[:1])
            raise StorageUnavailable() from exc
        try:
            async with conn.cursor() as cur:
                yield _TimedCursor(cur, self._timeout)
        except pymysql.err.IntegrityError:
            raise
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] == _DEADLOCK:
                # InnoDB rolled the statement back and the connection is fine: the caller
                # may run it again.
                raise _Deadlock() from exc
            conn.close()
            log.error("database error: %s %s", type(exc).__name__, exc.args[:1])
            raise StorageUnavailable() from exc
        except (pymysql.err.MySQLError, OSError, TimeoutError) as exc:
            # A failed or timed-out connection is never reused: the pool opens a fresh one.
            conn.close()
            log.error("database error: %s %s", type(exc).__name__, exc.args[:1])
            raise StorageUnavailable() from exc
        finally:
            pool.release(conn)

    async def fetch_one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        async with self._cursor() as cur:
            await cur.execute(_placeholders(sql), params)
            row: Row | None = await cur.fetchone()
            return row

    async def fetch_all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._cursor() as cur:
            await cur.execute(_placeholders(sql), params)
            return list(await cur.fetchall())

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> tuple[int, int | None]:
        # Each statement is its own transaction (autocommit), so one that lost a deadlock (two
        # logins trimming one user's sessions at once) was undone whole and is safe to repeat.
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                async with self._cursor() as cur:
                    await cur.execute(_placeholders(sql), params)
                    return cur.rowcount, cur.lastrowid
            except _Deadlock:
                if attempt == _DEADLOCK_RETRIES - 1:
                    log.error("database error: deadlock, %d attempts", _DEADLOCK_RETRIES)
                    raise
                await asyncio.sleep(random.uniform(0.001, 0.01) * (attempt + 1))  # noqa: S311
        raise AssertionError("unreachable")

    async def insert_unique(self, sql: str, params: Sequence[Any]) -> int | None:
        try:
            _, row_id = await self.execute(sql, params)
        except pymysql.err.IntegrityError as exc:
            if exc.args and exc.args[0] == _DUPLICATE_KEY:
                return None
            raise
        return row_id

    async def ping(self) -> None:
        await self.fetch_one("SELECT 1")

    async def apply_migrations(self) -> int:
        # An advisory lock, so replicas starting together migrate once.
        async with self._cursor() as lock:
            await lock.execute("SELECT GET_LOCK('gateway_schema_migration', 60)")
            try:
                # Checked first: CREATE TABLE IF NOT EXISTS on an existing table warns.
                exists = await self.fetch_one(
                    "SELECT 1 FROM information_schema.tables"
                    " WHERE table_schema = DATABASE() AND table_name = 'gateway_schema'"
                )
                if exists is None:
                    await self.execute("CREATE TABLE gateway_schema (version INT NOT NULL)")
                return await self.run_pending(await self.schema_version())
            finally:
                await lock.execute("SELECT RELEASE_LOCK('gateway_schema_migration')")


class _TimedCursor:
    """A cursor whose statements give up after the store's timeout (a hung server must not
    hold a request forever)."""

    def __init__(self, cursor: Any, timeout: float) -> None:
        self._cursor = cursor
        self._timeout = timeout

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        async with asyncio.timeout(self._timeout):
            await self._cursor.execute(sql, tuple(params))

    async def fetchone(self) -> Any:
        return await self._cursor.fetchone()

    async def fetchall(self) -> Any:
        return await self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid  # type: ignore[no-any-return]


def _placeholders(sql: str) -> str:
    return sql.replace("?", "%s")
