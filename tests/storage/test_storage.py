"""Both storage backends, same behaviour: run on SQLite and on MariaDB."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gateway.config.names import is_valid_username
from gateway.errors import StorageUnavailable
from gateway.storage import (
    SCHEMA_VERSION,
    UserExists,
    UserStore,
    create_store,
)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[UserStore]:
    store = create_store(database_url)
    await store.open()
    await store.migrate()
    yield store
    await store.close()


async def test_migrate_is_idempotent_and_concurrent(database_url: str) -> None:
    stores = [create_store(database_url) for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        versions = await asyncio.gather(*(s.migrate() for s in stores))
        assert versions == [SCHEMA_VERSION] * 3
        assert await stores[0].migrate() == SCHEMA_VERSION
    finally:
        for s in stores:
            await s.close()


async def test_add_get_list(store: UserStore) -> None:
    alice = await store.add_user("alice", "hash-a")
    bob = await store.add_user("bob", "hash-b")
    assert alice.id != bob.id
    assert await store.get_user(alice.id) == alice
    fetched = await store.get_user_by_name("bob")
    assert fetched is not None and fetched.password_hash == "hash-b"
    assert [u.username for u in await store.list_users()] == ["alice", "bob"]
    assert await store.get_user(999_999) is None
    assert await store.get_user_by_name("carol") is None


async def test_duplicate_user_is_refused(store: UserStore) -> None:
    await store.add_user("alice", "h")
    with pytest.raises(UserExists):
        await store.add_user("alice", "h2")


async def test_names_match_to_the_byte(store: UserStore) -> None:
    # MySQL's default collations fold case and ignore trailing spaces; we must not.
    await store.add_user("alice", "h")
    for spelling in ("Alice", "ALICE", "alice ", " alice"):
        assert await store.get_user_by_name(spelling) is None
    # ...and names that differ only in case cannot both exist: a backend matching X-User-Name
    # with a folding collation would take them for one user.
    with pytest.raises(UserExists):
        await store.add_user("Alice", "h2")
    assert len(await store.list_users()) == 1


async def test_disable_and_password_change(store: UserStore) -> None:
    user = await store.add_user("alice", "old")
    assert await store.set_disabled("alice", True)
    disabled = await store.get_user(user.id)
    assert disabled is not None and disabled.disabled
    assert await store.set_disabled("alice", False)
    assert not await store.set_disabled("nobody", True)
    await store.set_password_hash(user.id, "new")
    changed = await store.get_user(user.id)
    assert changed is not None and changed.password_hash == "new"


async def test_closed_store_is_unavailable_not_a_crash(database_url: str) -> None:
    store = create_store(database_url)
    with pytest.raises(StorageUnavailable):
        await store.get_user(1)


async def test_unreachable_mysql_is_unavailable() -> None:
    store = create_store("mysql://root@127.0.0.1:1/nothing")
    with pytest.raises(StorageUnavailable, match="cannot connect"):
        await store.open()


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("guang", True),
        ("a.b_c-d@e+f", True),
        ("x" * 64, True),
        ("", False),
        ("x" * 65, False),
        ("with space", False),
        ("new\nline", False),
        ("café", False),
        ("a/b", False),
    ],
)
def test_username_rule(name: str, valid: bool) -> None:
    assert is_valid_username(name) is valid
