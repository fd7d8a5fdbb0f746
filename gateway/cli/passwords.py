"""Reading a new password for `user add` and `user passwd`: from a prompt or from stdin."""

from __future__ import annotations

import getpass
import sys

from .errors import CommandError

__all__ = ["read_password"]

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


def read_password(from_stdin: bool) -> str:
    """A new password: one line of stdin, or typed twice at a terminal prompt."""
    password = _password_from_stdin() if from_stdin else _password_from_prompt()
    try:
        # Logins send passwords as JSON, so only UTF-8 text can ever be typed in again.
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise CommandError("the password is not valid UTF-8 text") from None
    if len(password) < MIN_PASSWORD_LENGTH:
        raise CommandError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise CommandError(f"a password may have at most {MAX_PASSWORD_LENGTH} characters")
    return password


def _password_from_stdin() -> str:
    if sys.stdin is None:
        raise CommandError("no password on stdin: it is closed")
    try:
        line = sys.stdin.readline()
    except UnicodeDecodeError:
        raise CommandError("the password is not valid UTF-8 text") from None
    except OSError as exc:
        raise CommandError(f"cannot read the password from stdin: {exc.strerror}") from None
    if not line:
        raise CommandError("no password on stdin: write it as one line")
    return line.rstrip("\r\n")


def _password_from_prompt() -> str:
    # getpass would fall back to reading stdin with a warning, or fail with a traceback.
    if sys.stdin is None or not sys.stdin.isatty():
        raise CommandError(
            "no terminal to ask for the password on: pipe it in with --password-stdin"
        )
    try:
        password = getpass.getpass("Password: ")
        repeated = getpass.getpass("Repeat password: ")
    except EOFError:
        raise CommandError("no password given") from None
    except UnicodeDecodeError:
        raise CommandError("the password is not valid UTF-8 text") from None
    if repeated != password:
        raise CommandError("the passwords do not match")
    return password
