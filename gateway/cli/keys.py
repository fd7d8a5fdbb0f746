"""`gateway keys generate` and `gateway keys rotate`: signing-key files for tokens and assertions.

Rotation keeps every token alive: the retired key's public half is written beside the key file,
to be listed under `tokens.previous_public_keys` (it still verifies and stays in the JWKS), and
a new private key takes the file's place. Restart the gateways to apply it; once the longest
token of the old key has expired (`tokens.refresh_ttl`), drop it from the list.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ..auth.audit import KEY_ROTATED, record_now
from ..config import GatewayConfig
from ..config.keys import KeyError_, load_private_key
from ..errors import StorageUnavailable
from ..server import run
from ..storage import AuditEvent, open_store
from .config_file import read_config
from .errors import CommandError

__all__ = ["ALGORITHMS", "keys_generate", "keys_rotate"]

ALGORITHMS = ("ES256", "EdDSA", "RS256")


def keys_generate(args: argparse.Namespace) -> int:
    """Write a new private key (mode 0600); never over an existing file."""
    path: Path = args.path
    if path.exists():
        raise CommandError(f"{path} exists; use `gateway keys rotate {path}` to replace it")
    kid = _write_new_key(path, args.algorithm)
    print(f"wrote {args.algorithm} key {path} (kid {kid}); set tokens.private_key_file to it")
    return 0


def keys_rotate(args: argparse.Namespace) -> int:
    """Keep the current key's public half beside it, then put a new key in its place."""
    path: Path = args.path
    try:
        current = load_private_key(path, None)
    except KeyError_ as exc:
        raise CommandError(str(exc)) from None
    algorithm = args.algorithm or current.algorithm
    retired = path.with_name(f"{path.stem}.{current.kid}.pub.pem")
    retired.write_bytes(
        current.verifying_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    kid = _write_new_key(path, algorithm)
    print(f"retired kid {current.kid}: its public key is {retired}")
    print(f"new {algorithm} key {path} (kid {kid})")
    print(f"add {retired} to tokens.previous_public_keys, then restart the gateways")
    config_path: Path | None = getattr(args, "config", None)
    if config_path is not None and config_path.exists():
        event = AuditEvent(
            at=time.time(),
            kind=KEY_ROTATED,
            address="cli",
            user_agent="gateway-cli",
            detail=f"kid {current.kid} -> {kid} ({path.name})",
        )
        run(_record(read_config(config_path, ephemeral_key_ok=True), event))
    return 0


async def _record(config: GatewayConfig, event: AuditEvent) -> None:
    try:
        async with open_store(config.database) as store:
            await record_now(store, event)
    except StorageUnavailable as exc:
        print(f"warning: the rotation is not in the audit table: {exc}")


def _write_new_key(path: Path, algorithm: str) -> str:
    private: Any
    if algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Written whole to a private temporary file, then renamed: a gateway starting meanwhile
    # reads the old key or the new one, never half of one.
    directory = path.parent if str(path.parent) else Path(".")
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    kid = load_private_key(path, algorithm).kid
    assert kid is not None  # noqa: S101 - asymmetric keys always have one
    return kid
