"""The database as the CLI meets it: an existing one, an unreachable one, one it cannot use."""

from __future__ import annotations

from pathlib import Path

from gateway.storage import SCHEMA_VERSION
from tests.support.processes import env_for, run_gateway


def test_db_init_on_an_existing_database_prints_only_its_result(
    workdir: Path, database_url: str
) -> None:
    env = env_for(database_url)
    assert run_gateway(workdir, env, "db", "init").returncode == 0
    # On MariaDB the database already exists both times (the fixture made it): no driver
    # warning such as "Can't create database ...; database exists".
    again = run_gateway(workdir, env, "db", "init")
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout == f"database ready: schema version {SCHEMA_VERSION}\n"
