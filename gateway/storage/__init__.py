"""User storage: one small interface, a MySQL/MariaDB backend and an embedded SQLite one."""

from __future__ import annotations

from yarl import URL

from .base import (
    SCHEMA_VERSION,
    Session,
    SessionStore,
    Store,
    User,
    UserExists,
    UserStore,
)
from .mysql import MySqlStore, create_mysql_database
from .sqlite import SqliteStore

__all__ = [
    "SCHEMA_VERSION",
    "Session",
    "SessionStore",
    "Store",
    "User",
    "UserExists",
    "UserStore",
    "create_database",
    "create_store",
]


def create_store(url: str, *, timeout: float = 5.0) -> Store:
    """The store for a `database.url` (validated by the config loader); call open() before use.
    `timeout` bounds connecting and every query (MySQL; SQLite is a local file)."""
    if URL(url).scheme == "sqlite":
        return SqliteStore(url)
    return MySqlStore(url, timeout=timeout)


async def create_database(url: str) -> None:
    """Create the database itself where that is a separate step (MySQL) and the account may."""
    if URL(url).scheme != "sqlite":
        await create_mysql_database(url)
