"""Where the client keeps its tokens: in memory (the default) or in a private file."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = ["FileTokenStore", "MemoryTokenStore", "TokenStore", "Tokens"]


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str
    refresh_token: str
    # time.monotonic() deadline derived from the server's expires_in (None: unknown).
    access_expires_at: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {"access_token": self.access_token, "refresh_token": self.refresh_token}


class TokenStore(Protocol):
    """Where the client keeps its tokens."""

    def load(self) -> Tokens | None: ...

    def save(self, tokens: Tokens) -> None: ...

    def clear(self) -> None: ...


class MemoryTokenStore:
    """Tokens for the life of the process (the default)."""

    def __init__(self) -> None:
        self._tokens: Tokens | None = None

    def load(self) -> Tokens | None:
        return self._tokens

    def save(self, tokens: Tokens) -> None:
        self._tokens = tokens

    def clear(self) -> None:
        self._tokens = None


class FileTokenStore:
    """Tokens in a file readable only by this user, for command-line tools that run again."""

    def __init__(self, path: str | Path) -> None:
        # "~/.cache/app/tokens.json" means the home directory, not a folder named "~" here.
        self._path = Path(path).expanduser()

    def load(self) -> Tokens | None:
        try:
            data = json.loads(self._path.read_text())
            return Tokens(str(data["access_token"]), str(data["refresh_token"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, tokens: Tokens) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(tokens.as_json(), file)
        os.replace(temporary, self._path)

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
