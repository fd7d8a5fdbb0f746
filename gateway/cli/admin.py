"""Admin commands: `db init` / `db prune`, `user ...` and `session ...`.

Every one has the same shape, written once in `admin_command`: load the config (no signing key
needed: they issue no tokens), read and hash a new password if the command takes one, open and
migrate the store, run the command's own lines, close everything.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..auth.audit import (
    KINDS,
    PASSWORD_CHANGED,
    ROLES_CHANGED,
    SESSION_ENDED,
    USER_DELETED,
    USER_DISABLED,
    USER_ENABLED,
    event_json,
    record_now,
)
from ..auth.passwords import PasswordHasher
from ..auth.sessions import end_user_sessions, prune_sessions
from ..config import GatewayConfig, parse_duration
from ..config.names import ROLE_RULE, USERNAME_RULE, is_valid_role, is_valid_username
from ..server import run
from ..storage import (
    SCHEMA_VERSION,
    AuditEvent,
    AuditQuery,
    Store,
    User,
    UserExists,
    open_store,
)
from .config_file import read_config
from .errors import CommandError
from .passwords import read_password

__all__ = [
    "audit_list",
    "db_init",
    "db_prune",
    "session_list",
    "session_revoke",
    "user_add",
    "user_delete",
    "user_list",
    "user_passwd",
    "user_role",
    "user_set_disabled",
]

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True, slots=True)
class Admin:
    """What an admin command works with: its arguments, the config and the opened store."""

    args: argparse.Namespace
    config: GatewayConfig
    store: Store
    _password_hash: str | None = field(default=None, repr=False)

    @property
    def password_hash(self) -> str:
        """The hash of the new password, for a command declared with `new_password=True`."""
        if self._password_hash is None:
            raise RuntimeError("the command was not declared with new_password=True")
        return self._password_hash


AdminCommand = Callable[[Admin], Awaitable[None]]


def admin_command(
    *,
    check: Callable[[argparse.Namespace], None] | None = None,
    new_password: bool = False,
    create_database: bool = False,
) -> Callable[[AdminCommand], Handler]:
    """Make `async def command(admin)` a CLI handler.

    `check` validates the arguments before anything is read; `new_password` reads a password
    (prompt or --password-stdin) and hands the command its hash; `create_database` creates the
    database itself first where that is a separate step (MySQL).
    """

    def decorate(command: AdminCommand) -> Handler:
        @functools.wraps(command)
        def handler(args: argparse.Namespace) -> int:
            if check is not None:
                check(args)
            config = read_config(args.config, ephemeral_key_ok=True)
            password = read_password(args.password_stdin) if new_password else None

            async def running() -> None:
                async with open_store(config.database, create=create_database) as store:
                    password_hash = None
                    if password is not None:
                        password_hash = await _hash(config, password)
                    await command(Admin(args, config, store, password_hash))

            run(running())
            return 0

        return handler

    return decorate


# --- database -----------------------------------------------------------------------------


@admin_command(create_database=True)
async def db_init(admin: Admin) -> None:
    """Create the database and apply schema migrations (idempotent)."""
    # open_store has migrated to exactly this version, or raised.
    print(f"database ready: schema version {SCHEMA_VERSION}")


@admin_command()
async def db_prune(admin: Admin) -> None:
    """Delete sessions no token can use any more."""
    pruned = await prune_sessions(admin.store, admin.config, time.time())
    print(f"pruned {pruned} expired or revoked session(s)")
    before = time.time() - admin.config.audit.retention
    print(f"pruned {await admin.store.prune_audit_events(before=before)} audit event(s)")


# --- users --------------------------------------------------------------------------------


def _valid_new_name(args: argparse.Namespace) -> None:
    if not is_valid_username(args.name):
        raise CommandError(f"invalid user name {args.name!r}: use {USERNAME_RULE}")


def _valid_role(args: argparse.Namespace) -> None:
    if not is_valid_role(args.role):
        raise CommandError(f"invalid role {args.role!r}: use {ROLE_RULE}")


@admin_command(check=_valid_new_name, new_password=True)
async def user_add(admin: Admin) -> None:
    """Add a user."""
    name: str = admin.args.name
    try:
        user = await admin.store.add_user(name, admin.password_hash)
    except UserExists:
        same = await _same_name(admin.store, name)
        if same is None or same.username == name:
            raise CommandError(f"user {name!r} already exists") from None
        raise CommandError(
            f"cannot add {name!r}: user {same.username!r} exists, and names that differ only "
            "in case are one user"
        ) from None
    print(f"added user {user.username} (id {user.id})")


@admin_command()
async def user_list(admin: Admin) -> None:
    """List users with their state and roles."""
    _print_table(
        "{:>6}  {:<32} {:<9} {:<20} {}",
        ("ID", "USERNAME", "STATE", "CREATED", "ROLES"),
        [
            (
                user.id,
                user.username,
                "disabled" if user.disabled else "active",
                _when(user.created_at),
                ",".join(user.roles),
            )
            for user in await admin.store.list_users()
        ],
    )


@admin_command()
async def user_set_disabled(admin: Admin) -> None:
    """Disable (ending their sessions) or enable a user."""
    user = await _existing_user(admin)
    disabled: bool = admin.args.disabled
    await admin.store.set_disabled(user.username, disabled)
    print(f"user {user.username} {'disabled' if disabled else 'enabled'}")
    await _audit(admin, USER_DISABLED if disabled else USER_ENABLED, user)
    if disabled:
        await _end_sessions(admin.store, user, "user disabled")


@admin_command(new_password=True)
async def user_passwd(admin: Admin) -> None:
    """Set a user's password, ending their sessions."""
    user = await _existing_user(admin)
    await admin.store.set_password_hash(user.id, admin.password_hash)
    print(f"password changed for {user.username}")
    await _audit(admin, PASSWORD_CHANGED, user)
    await _end_sessions(admin.store, user, "password changed")


@admin_command(check=_valid_role)
async def user_role(admin: Admin) -> None:
    """Grant or take away a role."""
    user = await _existing_user(admin)
    role: str = admin.args.role
    roles = set(user.roles) | {role} if admin.args.grant else set(user.roles) - {role}
    await admin.store.set_roles(user.id, tuple(roles))
    print(f"{user.username}: roles {','.join(sorted(roles)) or '(none)'}")
    change = f"{'added' if admin.args.grant else 'removed'} {role}"
    await _audit(admin, ROLES_CHANGED, user, f"{change}; now {','.join(sorted(roles)) or '-'}")
    print("(access tokens carry roles: the change applies at the next refresh)")


@admin_command()
async def user_delete(admin: Admin) -> None:
    """Delete a user after ending their sessions."""
    user = await _existing_user(admin)
    await _end_sessions(admin.store, user, "user deleted")
    await admin.store.delete_user(user.id)
    print(f"deleted user {user.username}")
    await _audit(admin, USER_DELETED, user)


# --- sessions -----------------------------------------------------------------------------


@admin_command()
async def session_list(admin: Admin) -> None:
    """A user's sessions: created, last used, end, state."""
    user = await _existing_user(admin)
    now = time.time()
    rows = []
    for session in await admin.store.list_sessions(user.id):
        ends = min(session.expires_at, session.refresh_expires_at)
        if session.revoked_at is not None:
            state = f"revoked ({session.revoked_reason})"
        elif ends <= now:
            state = "expired"
        else:
            state = "active"
        rows.append(
            (session.id, _when(session.created_at), _when(session.last_used_at), _when(ends), state)
        )
    _print_table(
        "{:<32}  {:<20} {:<20} {:<20} {}",
        ("SESSION", "CREATED", "LAST USED", "ENDS", "STATE"),
        rows,
    )


@admin_command()
async def session_revoke(admin: Admin) -> None:
    """End all of a user's sessions."""
    user = await _existing_user(admin)
    await _end_sessions(admin.store, user, "revoked by admin")
    await _audit(admin, SESSION_ENDED, user, "by admin: all sessions")


# --- audit --------------------------------------------------------------------------------


def _valid_audit_query(args: argparse.Namespace) -> None:
    unknown = sorted(set(args.kind or ()) - set(KINDS))
    if unknown:
        raise CommandError(f"unknown kind {unknown[0]!r}: use one of {', '.join(KINDS)}")
    try:
        args.since_seconds = parse_duration(args.since) if args.since else None
    except ValueError as exc:
        raise CommandError(f"--since {args.since!r}: {exc}") from None


@admin_command(check=_valid_audit_query)
async def audit_list(admin: Admin) -> None:
    """Security events, oldest first: --user, --since (a duration), --kind, --json."""
    args = admin.args
    since = time.time() - args.since_seconds if args.since_seconds is not None else 0.0
    query = AuditQuery(since, username=args.user, kinds=tuple(args.kind or ()), limit=args.limit)
    events = await admin.store.list_audit_events(query)
    if args.json:
        for event in events:
            print(json.dumps(event_json(event), ensure_ascii=True))
        return
    _print_table(
        "{:<20} {:<22} {:<8} {:<16} {:<16} {}",
        ("TIME", "KIND", "OUTCOME", "USER", "ADDRESS", "DETAIL"),
        [
            (
                _when(event.at, seconds=True),
                event.kind,
                event.outcome,
                event.username or ("-" if event.user_id is None else f"#{event.user_id}"),
                event.address or "-",
                event.detail or "-",
            )
            for event in events
        ],
    )


# --- shared steps -------------------------------------------------------------------------


async def _hash(config: GatewayConfig, password: str) -> str:
    hasher = PasswordHasher(config.passwords)
    await hasher.start()
    try:
        return await hasher.hash(password)
    finally:
        await hasher.close()


async def _existing_user(admin: Admin) -> User:
    name: str = admin.args.name
    user = await admin.store.get_user_by_name(name)
    if user is None:
        same = await _same_name(admin.store, name)
        hint = f" (user names are exact: did you mean {same.username!r}?)" if same else ""
        raise CommandError(f"no user named {name!r}{hint}")
    return user


async def _same_name(store: Store, name: str) -> User | None:
    """The user whose name differs from `name` at most in case (the store folds with lower())."""
    folded = name.lower()
    return next((u for u in await store.list_users() if u.username.lower() == folded), None)


async def _end_sessions(store: Store, user: User, reason: str) -> None:
    ended = await end_user_sessions(store, user.id, reason, time.time())
    print(f"ended {ended} session(s) of {user.username}")


def _print_table(row_format: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A listing: the header and every row through one format, so the columns line up."""
    print(row_format.format(*header))
    for row in rows:
        print(row_format.format(*row))


def _when(timestamp: float, *, seconds: bool = False) -> str:
    shape = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M UTC"
    return datetime.fromtimestamp(timestamp, UTC).strftime(shape)


async def _audit(admin: Admin, kind: str, user: User, detail: str = "") -> None:
    """An admin action in the audit trail (the log line and the table)."""
    event = AuditEvent(
        at=time.time(),
        kind=kind,
        user_id=user.id,
        username=user.username,
        address="cli",
        user_agent="gateway-cli",
        detail=detail or "by admin",
    )
    await record_now(admin.store, event)
