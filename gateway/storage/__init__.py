"""User storage: one small interface, a MySQL/MariaDB backend and an embedded SQLite one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from yarl import URL

from ..config.model import DatabaseConfig
from . import base
from .base import *  # noqa: F403
from .base import Store
from .mysql import MySqlStore, create_mysql_database
from .sqlite import SqliteStore

# The records and interfaces of `base`, and how to open a store.
__all__ = ["create_store", "open_store"]
__all__ += base.__all__


def create_store(url: str, *, timeout: float = 5.0) -> Store:
    """The store for a `database.url` (validated by the config loader); call open() before use.
    `timeout` bounds connecting and every query (MySQL; SQLite is a local file)."""
    if URL(url).scheme == "sqlite":
        return SqliteStore(url)
    return MySqlStore(url, timeout=timeout)


async def create_database(url: str, *, connect_timeout: float = 5.0) -> None:
    """Create the database itself where that is a separate step (MySQL) and the account may."""
    if URL(url).scheme != "sqlite":
        await create_mysql_database(url, connect_timeout=connect_timeout)


@asynccontextmanager
async def open_store(
    database: DatabaseConfig, *, create: bool = False, store: Store | None = None
) -> AsyncIterator[Store]:
    """The store for `database`, opened and migrated; closed on exit. Every user of the
    database goes through here.

    `create`: first create the database itself where that is a separate step (`db init`, `demo`).
    `store`: open this one, made by create_store for the same database, instead of a new one (the
    app creates its store up front because its services hold it).
    """
    if create:
        await create_database(database.url, connect_timeout=database.timeout)
    if store is None:
        store = create_store(database.url, timeout=database.timeout)
    await store.open()
    try:
        await store.migrate()
        yield store
    finally:
        await store.close()
