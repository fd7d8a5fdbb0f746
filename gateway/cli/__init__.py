"""The `gateway` command: serve, demo, check-config, db, user and session administration."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from ..app import create_app, create_metrics_app, reload_config
from ..auth.passwords import PasswordHasher
from ..auth.sessions import prune_sessions
from ..config import GatewayConfig, load_config
from ..config.names import ROLE_RULE, USERNAME_RULE, is_valid_role, is_valid_username
from ..errors import ConfigError, GatewayError
from ..server import run, serve_until_stopped, supervise_workers, worker_argv
from ..storage import (
    Store,
    User,
    UserExists,
    create_database,
    create_store,
)
from ..telemetry.logs import configure_logging

__all__ = ["main"]

log = logging.getLogger("gateway")
MIN_PASSWORD_LENGTH = 8


class CommandError(Exception):
    """A failure to report in one line, without a traceback."""


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    # Plain text until a command that serves has read its config's logging section.
    configure_logging("text", args.log_level or "info")
    try:
        code = args.handler(args)
    except ConfigError as exc:
        print("configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        code = 2
    except (CommandError, GatewayError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=Path("config.yaml"),
        help="config file (default ./config.yaml)",
    )
    common.add_argument(
        "--log-level",
        default=None,
        choices=["debug", "info", "warning", "error"],
        help="default: the config's logging.level",
    )

    parser = argparse.ArgumentParser(prog="gateway", description="Authentication gateway")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", parents=[common], help="run the gateway")
    serve.add_argument(
        "--demo", action="store_true", help="allow a throwaway signing secret when none is set"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes sharing the port (default: the config's server.workers)",
    )
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    serve.set_defaults(handler=_serve)

    demo = commands.add_parser(
        "demo", parents=[common], help="run the gateway and the demo upstream, with a demo user"
    )
    demo.set_defaults(handler=_demo)

    probe = commands.add_parser(
        "healthcheck", parents=[common], help="exit 0 if the local gateway answers /healthz"
    )
    probe.set_defaults(handler=_healthcheck)

    check = commands.add_parser("check-config", parents=[common], help="validate the config file")
    check.set_defaults(handler=_check_config)

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    init = db.add_parser(
        "init", parents=[common], help="create the database and schema (idempotent)"
    )
    init.set_defaults(handler=_db_init)

    user = commands.add_parser("user", help="manage users").add_subparsers(
        dest="user", required=True
    )
    add = user.add_parser("add", parents=[common], help="add a user")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(handler=_user_add)
    listing = user.add_parser("list", parents=[common], help="list users")
    listing.set_defaults(handler=_user_list)
    for verb, disabled in (("disable", True), ("enable", False)):
        sub = user.add_parser(verb, parents=[common], help=f"{verb} a user")
        sub.add_argument("name")
        sub.set_defaults(handler=_user_set_disabled, disabled=disabled)
    passwd = user.add_parser("passwd", parents=[common], help="set a user's password")
    passwd.add_argument("name")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    passwd.set_defaults(handler=_user_passwd)
    role = user.add_parser("role", help="grant or take away roles")
    role_commands = role.add_subparsers(dest="role", required=True)
    for verb in ("add", "remove"):
        change = role_commands.add_parser(verb, parents=[common], help=f"{verb} a role")
        change.add_argument("name")
        change.add_argument("role")
        change.set_defaults(handler=_user_role, grant=verb == "add")
    delete = user.add_parser(
        "delete", parents=[common], help="delete a user and end their sessions"
    )
    delete.add_argument("name")
    delete.set_defaults(handler=_user_delete)

    prune = db.add_parser("prune", parents=[common], help="delete expired and revoked sessions")
    prune.set_defaults(handler=_db_prune)

    session = commands.add_parser("session", help="a user's sessions (logins)")
    session_commands = session.add_subparsers(dest="session", required=True)
    session_list = session_commands.add_parser("list", parents=[common], help="list sessions")
    session_list.add_argument("name")
    session_list.set_defaults(handler=_session_list)
    session_revoke = session_commands.add_parser(
        "revoke", parents=[common], help="end all of a user's sessions"
    )
    session_revoke.add_argument("name")
    session_revoke.set_defaults(handler=_session_revoke)
    return parser


# --- serving ------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    config = load_config(args.config, ephemeral_key_ok=args.demo)
    configure_logging(config.logging.format, args.log_level or config.logging.level)
    workers = args.workers or config.server.workers
    if workers < 1:
        raise CommandError("--workers must be at least 1")
    if workers > 1 and args.worker_index is None:
        return _supervise(args, config, workers)
    _warn_if_ephemeral(config)
    server = config.server
    index = args.worker_index or 0

    async def serve() -> int:
        app = create_app(config)
        sites = [(app, server.host, server.port)]
        if config.metrics.enabled and config.metrics.port:
            sites.append((create_metrics_app(app), server.host, config.metrics.port + index))

        async def started() -> None:
            log.info("gateway listening on http://%s:%d", server.host, server.port)

        await serve_until_stopped(
            sites,
            on_started=started,
            on_reload=lambda: reload_config(app, str(args.config)),
            shutdown_timeout=server.shutdown_timeout,
            reuse_port=args.worker_index is not None,
        )
        return 0

    return run(serve())


def _supervise(args: argparse.Namespace, config: GatewayConfig, workers: int) -> int:
    if config.tokens.ephemeral:
        raise CommandError(
            "--workers needs a configured signing key: each worker would make its own throwaway "
            "secret and reject the others' tokens"
        )

    async def migrate() -> None:
        store = create_store(config.database.url, timeout=config.database.timeout)
        await store.open()
        try:
            await store.migrate()  # once, before the workers start
        finally:
            await store.close()

    run(migrate())
    argv = ["serve", "--config", str(args.config)]
    if args.log_level:
        argv += ["--log-level", args.log_level]
    log.info("starting %d workers on http://%s:%d", workers, config.server.host, config.server.port)
    return supervise_workers(lambda index: worker_argv(argv, index), workers)


def _demo(args: argparse.Namespace) -> int:
    from upstream_demo import create_upstream_app

    config = load_config(args.config, ephemeral_key_ok=True)
    configure_logging("text", args.log_level or config.logging.level)  # a person is reading
    _warn_if_ephemeral(config)
    upstream = config.upstreams.get("demo")
    if upstream is None or upstream.url.host not in ("127.0.0.1", "localhost", "::1"):
        raise CommandError("the demo needs an upstream named 'demo' on localhost in the config")
    server = config.server
    base = f"http://{server.host}:{server.port}"

    async def demo() -> int:
        await _ensure_demo_user(config)

        async def started() -> None:
            print(
                f"\nDemo upstream on {upstream.url}, gateway on {base}\n"
                f"Demo user: guang / 123456\n"
                f"Open the demo page: {base}/demo\n\n"
                f"  curl {base}/aaa\n"
                f"  curl -i {base}/bbb\n"
                f"  curl -s -X POST {base}/user/login -H 'Content-Type: application/json' \\\n"
                f'       -d \'{{"username":"guang","password":"123456"}}\'\n'
                f"  curl {base}/bbb -H 'Authorization: Bearer <access_token>'\n\n"
                "Stop with Ctrl-C.\n",
                flush=True,
            )

        await serve_until_stopped(
            [
                (create_upstream_app(), upstream.url.host or "127.0.0.1", upstream.url.port or 80),
                (create_app(config), server.host, server.port),
            ],
            on_started=started,
        )
        return 0

    return run(demo())


async def _ensure_demo_user(config: GatewayConfig) -> None:
    async def ensure(store: Store, hasher: PasswordHasher) -> None:
        if await store.get_user_by_name("guang") is not None:
            return
        # Never plant a known password in a database that holds real users.
        if await store.list_users():
            log.warning("not creating the demo user guang: the database already has users")
            return
        await store.add_user("guang", await hasher.hash("123456"))
        log.info("created the demo user guang")

    await create_database(config.database.url)
    await _with_store(config, ensure)


def _warn_if_ephemeral(config: GatewayConfig) -> None:
    if config.tokens.ephemeral:
        log.warning(
            "DEMO MODE: no JWT_SECRET set, signing with a random secret that lives only as long as "
            "this process; every token dies on restart. Set JWT_SECRET for real use."
        )


def _healthcheck(args: argparse.Namespace) -> int:
    """For container HEALTHCHECKs: no curl in a slim image, and the port comes from config."""
    server = _admin_config(args).server
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host  # noqa: S104
    url = f"http://{host}:{server.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            healthy = response.status == 200
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    print("healthy" if healthy else f"unhealthy: {url}")
    return 0 if healthy else 1


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(
        f"{config.source}: OK ({len(config.routes)} routes, {len(config.upstreams)} upstreams, "
        f"{config.tokens.key.algorithm} tokens)"
    )
    return 0


# --- database and users -------------------------------------------------------------------


def _admin_config(args: argparse.Namespace) -> GatewayConfig:
    # Admin commands issue no tokens, so they do not need the signing secret.
    return load_config(args.config, ephemeral_key_ok=True)


async def _with_store(
    config: GatewayConfig, action: Callable[[Store, PasswordHasher], Awaitable[None]]
) -> None:
    store = create_store(config.database.url, timeout=config.database.timeout)
    hasher = PasswordHasher(config.passwords)
    await store.open()
    try:
        await store.migrate()
        await hasher.start()
        await action(store, hasher)
    finally:
        await hasher.close()
        await store.close()


def _db_init(args: argparse.Namespace) -> int:
    config = _admin_config(args)

    async def init() -> int:
        await create_database(config.database.url)
        store = create_store(config.database.url, timeout=config.database.timeout)
        await store.open()
        try:
            version = await store.migrate()
        finally:
            await store.close()
        print(f"database ready: schema version {version}")
        return 0

    return run(init())


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise CommandError("the passwords do not match")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise CommandError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > 1024:
        raise CommandError("a password may have at most 1024 characters")
    return password


def _user_add(args: argparse.Namespace) -> int:
    if not is_valid_username(args.name):
        raise CommandError(f"invalid user name {args.name!r}: use {USERNAME_RULE}")
    config = _admin_config(args)
    password = _read_password(args)

    async def add(store: Store, hasher: PasswordHasher) -> None:
        try:
            user = await store.add_user(args.name, await hasher.hash(password))
        except UserExists:
            raise CommandError(f"user {args.name!r} already exists") from None
        print(f"added user {user.username} (id {user.id})")

    run(_with_store(config, add))
    return 0


def _user_list(args: argparse.Namespace) -> int:
    config = _admin_config(args)

    async def show(store: Store, hasher: PasswordHasher) -> None:
        users = await store.list_users()
        print(f"{'ID':>6}  {'USERNAME':<32} {'STATE':<9} {'CREATED':<20} ROLES")
        for user in users:
            state = "disabled" if user.disabled else "active"
            print(
                f"{user.id:>6}  {user.username:<32} {state:<9} {_when(user.created_at):<20} "
                f"{','.join(user.roles)}"
            )

    run(_with_store(config, show))
    return 0


def _user_set_disabled(args: argparse.Namespace) -> int:
    config = _admin_config(args)

    async def change(store: Store, hasher: PasswordHasher) -> None:
        user = await _existing_user(store, args.name)
        await store.set_disabled(user.username, args.disabled)
        print(f"user {user.username} {'disabled' if args.disabled else 'enabled'}")
        if args.disabled:
            await _end_sessions(store, user, "user disabled")

    run(_with_store(config, change))
    return 0


def _user_passwd(args: argparse.Namespace) -> int:
    config = _admin_config(args)
    password = _read_password(args)

    async def change(store: Store, hasher: PasswordHasher) -> None:
        user = await _existing_user(store, args.name)
        await store.set_password_hash(user.id, await hasher.hash(password))
        print(f"password changed for {user.username}")
        await _end_sessions(store, user, "password changed")

    run(_with_store(config, change))
    return 0


def _user_role(args: argparse.Namespace) -> int:
    if not is_valid_role(args.role):
        raise CommandError(f"invalid role {args.role!r}: use {ROLE_RULE}")
    config = _admin_config(args)

    async def change(store: Store, hasher: PasswordHasher) -> None:
        user = await _existing_user(store, args.name)
        roles = set(user.roles)
        roles = roles | {args.role} if args.grant else roles - {args.role}
        await store.set_roles(user.id, tuple(roles))
        print(f"{user.username}: roles {','.join(sorted(roles)) or '(none)'}")
        print("(access tokens carry roles: the change applies at the next refresh)")

    run(_with_store(config, change))
    return 0


def _user_delete(args: argparse.Namespace) -> int:
    config = _admin_config(args)

    async def delete(store: Store, hasher: PasswordHasher) -> None:
        user = await _existing_user(store, args.name)
        await _end_sessions(store, user, "user deleted")
        await store.delete_user(user.id)
        print(f"deleted user {user.username}")

    run(_with_store(config, delete))
    return 0


async def _existing_user(store: Store, name: str) -> User:
    user = await store.get_user_by_name(name)
    if user is None:
        raise CommandError(f"no user named {name!r}")
    return user


async def _end_sessions(store: Store, user: User, reason: str) -> None:
    ended = await store.revoke_user_sessions(user.id, reason=reason, now=time.time())
    print(f"ended {ended} session(s) of {user.username}")


# --- sessions -----------------------------------------------------------------------------


def _db_prune(args: argparse.Namespace) -> int:
    config = _admin_config(args)

    async def prune(store: Store, hasher: PasswordHasher) -> None:
        pruned = await prune_sessions(store, config, time.time())
        print(f"pruned {pruned} expired or revoked session(s)")

    run(_with_store(config, prune))
    return 0


def _session_list(args: argparse.Namespace) -> int:
    config = _admin_config(args)

    async def show(store: Store, hasher: PasswordHasher) -> None:
        user = await _existing_user(store, args.name)
        now = time.time()
        print(f"{'SESSION':<32}  {'CREATED':<20} {'LAST USED':<20} {'ENDS':<20} STATE")
        for session in await store.list_sessions(user.id):
            if session.revoked_at is not None:
                state = f"revoked ({session.revoked_reason})"
            elif min(session.expires_at, session.refresh_expires_at) <= now:
                state = "expired"
            else:
                state = "active"
            ends = min(session.expires_at, session.refresh_expires_at)
            print(
                f"{session.id:<32}  {_when(session.created_at):<20} "
                f"{_when(session.last_used_at):<20} {_when(ends):<20} {state}"
            )

    run(_with_store(config, show))
    return 0


def _session_revoke(args: argparse.Namespace) -> int:
    config = _admin_config(args)

    async def revoke(store: Store, hasher: PasswordHasher) -> None:
        await _end_sessions(store, await _existing_user(store, args.name), "revoked by admin")

    run(_with_store(config, revoke))
    return 0


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")
