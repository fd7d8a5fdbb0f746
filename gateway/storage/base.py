"""The user store interface every backend implements, and the rules for user names."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import ServiceUnavailable

__all__ = [
    "SCHEMA_VERSION",
    "USERNAME_RULE",
    "StorageUnavailable",
    "User",
    "UserExists",
    "UserStore",
    "is_valid_username",
]

SCHEMA_VERSION = 1
USERNAME_RULE = "1 to 64 characters from letters, digits and . _ @ + -"
_USERNAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")


def is_valid_username(name: str) -> bool:
    """User names are plain ASCII so they are safe in headers, logs and every collation."""
    return _USERNAME.fullmatch(name) is not None


class StorageUnavailable(ServiceUnavailable):
    """The database could not be reached or failed; the request may be retried."""

    def __init__(self, message: str = "Database unavailable, try again shortly") -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class UserExists(Exception):
    """A user with that name already exists."""


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    password_hash: str = field(repr=False)
    disabled: bool
    created_at: float


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

    async def set_password_hash(self, user_id: int, password_hash: str) -> None: ...
