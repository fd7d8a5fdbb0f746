"""The admin side of the audit trail, on SQLite and MariaDB: each admin action is one event in
the table and one gateway.audit log line; `gateway audit list` shows them, filtered."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.processes import env_for, run_gateway


def gateway(workdir: Path, env: dict[str, str], *args: str, stdin: str = "") -> str:
    result = run_gateway(workdir, env, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def test_admin_actions_are_audited_and_listed(workdir: Path, database_url: str) -> None:
    env = env_for(database_url, JWT_SECRET="s" * 40)
    gateway(workdir, env, "user", "add", "alice", "--password-stdin", stdin="first-pass\n")
    steps = [
        (("user", "disable", "alice"), "user_disabled"),
        (("user", "enable", "alice"), "user_enabled"),
        (("user", "passwd", "alice", "--password-stdin"), "password_changed"),
        (("user", "role", "add", "alice", "admin"), "roles_changed"),
        (("user", "role", "remove", "alice", "admin"), "roles_changed"),
        (("session", "revoke", "alice"), "session_ended"),
        (("keys", "generate", "signing.pem"), None),
        (("keys", "rotate", "signing.pem"), "key_rotated"),
        (("user", "delete", "alice"), "user_deleted"),
    ]
    for args, kind in steps:
        output = gateway(workdir, env, *args, stdin="second-pass\n")
        if kind is not None:  # the log stream, on stderr
            assert f"gateway.audit: {kind} success" in output, output
        assert "first-pass" not in output and "second-pass" not in output

    listed = gateway(workdir, env, "audit", "list", "--json")
    events = [json.loads(line) for line in listed.splitlines() if line.startswith("{")]
    kinds = [kind for _, kind in steps if kind is not None]
    assert [e["kind"] for e in events] == kinds
    assert {e["username"] for e in events if e["kind"] != "key_rotated"} == {"alice"}
    roles = [e["detail"] for e in events if e["kind"] == "roles_changed"]
    assert roles == ["added admin; now admin", "removed admin; now -"]
    assert "first-pass" not in listed and "second-pass" not in listed
    assert set(events[0]) == {
        "time", "kind", "outcome", "user_id", "username", "session_id", "address",
        "user_agent", "request_id", "detail",
    }  # fmt: skip

    table = gateway(workdir, env, "audit", "list", "--user", "alice", "--since", "1h")
    lines = table.splitlines()
    assert lines[0].split() == ["TIME", "KIND", "OUTCOME", "USER", "ADDRESS", "DETAIL"]
    assert [line.split()[2] for line in lines[1:]] == [*kinds[:-2], "user_deleted"]
    only = gateway(
        workdir, env, "audit", "list", "--kind", "user_disabled", "--kind", "user_enabled"
    )
    assert [line.split()[2] for line in only.splitlines()[1:]] == ["user_disabled", "user_enabled"]


def test_audit_list_refuses_bad_filters(workdir: Path, database_url: str) -> None:
    env = env_for(database_url, JWT_SECRET="s" * 40)
    bad_kind = run_gateway(workdir, env, "audit", "list", "--kind", "logins")
    assert bad_kind.returncode == 1 and "unknown kind 'logins'" in bad_kind.stderr
    bad_since = run_gateway(workdir, env, "audit", "list", "--since", "soon")
    assert bad_since.returncode == 1 and "--since 'soon'" in bad_since.stderr
