"""What user and role names may be: plain ASCII, safe in headers, logs and every collation."""

from __future__ import annotations

import re

__all__ = ["ROLE_RULE", "USERNAME_RULE", "is_valid_role", "is_valid_username"]

USERNAME_RULE = "1 to 64 characters from letters, digits and . _ @ + -"
ROLE_RULE = "1 to 64 characters from letters, digits and . _ : -"
_USERNAME = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
_ROLE = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def is_valid_username(name: str) -> bool:
    return _USERNAME.fullmatch(name) is not None


def is_valid_role(name: str) -> bool:
    # No commas: roles travel comma-separated in a header and a database column.
    return _ROLE.fullmatch(name) is not None
