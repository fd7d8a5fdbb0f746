"""User names in the CLI: names differing only in case are one user, and it says so."""

from __future__ import annotations

from pathlib import Path

from tests.support.processes import env_for, run_gateway


def add_alice(workdir: Path, env: dict[str, str]) -> None:
    add = run_gateway(workdir, env, "user", "add", "alice", "--password-stdin", stdin="pass-w0rd\n")
    assert add.returncode == 0, add.stderr


def test_adding_a_name_that_differs_only_in_case_names_the_existing_user(
    workdir: Path, database_url: str
) -> None:
    env = env_for(database_url)
    add_alice(workdir, env)
    clash = run_gateway(
        workdir, env, "user", "add", "Alice", "--password-stdin", stdin="pass-word2\n"
    )
    assert (clash.returncode, clash.stderr.strip()) == (
        1,
        (
            "error: cannot add 'Alice': user 'alice' exists, and names that differ only in case "
            "are one user"
        ),
    )
    listing = run_gateway(workdir, env, "user", "list").stdout
    assert "alice" in listing and "Alice" not in listing


def test_a_name_in_the_wrong_case_is_not_found_but_the_right_one_is_suggested(
    workdir: Path, database_url: str
) -> None:
    env = env_for(database_url)
    add_alice(workdir, env)
    for command in (["user", "disable"], ["session", "list"]):
        result = run_gateway(workdir, env, *command, "ALICE")
        assert (result.returncode, result.stderr.strip()) == (
            1,
            "error: no user named 'ALICE' (user names are exact: did you mean 'alice'?)",
        )
