"""The command line: every subcommand, its options, and the function that runs it."""

from __future__ import annotations

import argparse
import importlib.metadata
from pathlib import Path

from . import admin, keys, serving

__all__ = ["build_parser"]

DISTRIBUTION = "auth-gateway"  # pyproject.toml's project.name, for --version


def build_parser() -> argparse.ArgumentParser:
    """The `gateway` parser; each leaf command sets `handler(args) -> exit code`."""
    parser = argparse.ArgumentParser(
        prog="gateway", description="Authentication gateway", parents=[_options(top=True)]
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    common = _options(top=False)
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
    serve.set_defaults(handler=serving.serve)

    demo = commands.add_parser(
        "demo", parents=[common], help="run the gateway and the demo upstream, with a demo user"
    )
    demo.set_defaults(handler=serving.demo)

    probe = commands.add_parser(
        "healthcheck", parents=[common], help="exit 0 if the local gateway answers /healthz"
    )
    probe.set_defaults(handler=serving.healthcheck)

    check = commands.add_parser("check-config", parents=[common], help="validate the config file")
    check.set_defaults(handler=serving.check_config)

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    init = db.add_parser(
        "init", parents=[common], help="create the database and schema (idempotent)"
    )
    init.set_defaults(handler=admin.db_init)
    prune = db.add_parser("prune", parents=[common], help="delete expired and revoked sessions")
    prune.set_defaults(handler=admin.db_prune)

    user = commands.add_parser("user", help="manage users").add_subparsers(
        dest="user", required=True
    )
    add = user.add_parser("add", parents=[common], help="add a user")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(handler=admin.user_add)
    listing = user.add_parser("list", parents=[common], help="list users")
    listing.set_defaults(handler=admin.user_list)
    for verb, disabled in (("disable", True), ("enable", False)):
        sub = user.add_parser(verb, parents=[common], help=f"{verb} a user")
        sub.add_argument("name")
        sub.set_defaults(handler=admin.user_set_disabled, disabled=disabled)
    passwd = user.add_parser("passwd", parents=[common], help="set a user's password")
    passwd.add_argument("name")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    passwd.set_defaults(handler=admin.user_passwd)
    role = user.add_parser("role", help="grant or take away roles")
    role_commands = role.add_subparsers(dest="role", required=True)
    for verb in ("add", "remove"):
        change = role_commands.add_parser(verb, parents=[common], help=f"{verb} a role")
        change.add_argument("name")
        change.add_argument("role")
        change.set_defaults(handler=admin.user_role, grant=verb == "add")
    delete = user.add_parser(
        "delete", parents=[common], help="delete a user and end their sessions"
    )
    delete.add_argument("name")
    delete.set_defaults(handler=admin.user_delete)

    session = commands.add_parser("session", help="a user's sessions (logins)")
    session_commands = session.add_subparsers(dest="session", required=True)
    session_list = session_commands.add_parser("list", parents=[common], help="list sessions")
    session_list.add_argument("name")
    session_list.set_defaults(handler=admin.session_list)
    session_revoke = session_commands.add_parser(
        "revoke", parents=[common], help="end all of a user's sessions"
    )
    session_revoke.add_argument("name")
    session_revoke.set_defaults(handler=admin.session_revoke)

    audit = commands.add_parser("audit", help="the audit trail").add_subparsers(
        dest="audit", required=True
    )
    audit_list = audit.add_parser("list", parents=[common], help="list security events")
    audit_list.add_argument("--user", default=None, help="only this user's events")
    audit_list.add_argument("--since", default=None, help="a duration: 1h, 7d, 30m")
    audit_list.add_argument(
        "--kind", action="append", default=None, help="only this kind (repeatable)"
    )
    audit_list.add_argument("--limit", type=int, default=1000, help="the newest this many")
    audit_list.add_argument("--json", action="store_true", help="one JSON object per line")
    audit_list.set_defaults(handler=admin.audit_list)

    keys_parser = commands.add_parser("keys", help="signing-key files (asymmetric keys)")
    key_commands = keys_parser.add_subparsers(dest="keys", required=True)
    generate = key_commands.add_parser("generate", help="write a new private key file")
    generate.add_argument("path", type=Path)
    generate.add_argument("--algorithm", choices=keys.ALGORITHMS, default="ES256")
    generate.set_defaults(handler=keys.keys_generate)
    rotate = key_commands.add_parser(
        "rotate",
        parents=[common],
        help="keep the key's public half for verifying, write a new key in its place "
        "(recorded in the audit trail of --config's database when that file exists)",
    )
    rotate.add_argument("path", type=Path)
    rotate.add_argument("--algorithm", choices=keys.ALGORITHMS, default=None)
    rotate.set_defaults(handler=keys.keys_rotate)
    return parser


def _options(*, top: bool) -> argparse.ArgumentParser:
    """--config and --log-level, accepted before the subcommand and after it (after wins).

    The defaults live on the top-level parser only: a subcommand's parser copies its own
    values over the top-level ones, so its defaults must not exist (SUPPRESS).
    """
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--config",
        type=Path,
        default=Path("config.yaml") if top else argparse.SUPPRESS,
        help="config file (default ./config.yaml)",
    )
    options.add_argument(
        "--log-level",
        default=None if top else argparse.SUPPRESS,
        choices=["debug", "info", "warning", "error"],
        help="default: the config's logging.level",
    )
    return options


def _version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"
