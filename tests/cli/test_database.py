"""The database as the CLI meets it: an existing one, an unreachable one, one it cannot use."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.storage import SCHEMA_VERSION, create_store
from gateway.storage.sql import SqlStore
from tests.support.gateways import TEST_SECRET
from tests.support.processes import REPO, env_for, free_port, run_gateway


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


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A working directory with the shipped config.yaml, for SQLite-only tests."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    return tmp_path


@pytest.mark.parametrize("command", [["user", "list"], ["db", "init"], ["serve", "--demo"]])
def test_an_unusable_sqlite_path_is_one_line_and_the_command_exits(
    home: Path, command: list[str]
) -> None:
    (home / "a-directory").mkdir()
    (home / "not-a-database.db").write_text("just text\n")
    (home / "a-file").write_text("")
    for path, reason in (
        ("a-directory", "unable to open database file"),  # also what an unwritable path gives
        ("not-a-database.db", "file is not a database"),
        ("a-file/gateway.db", "File exists: 'a-file'"),
    ):
        env = env_for(f"sqlite:///{path}", GATEWAY_PORT=str(free_port()))
        result = run_gateway(home, env, *command)  # a hang would time out
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert line.startswith(f"error: cannot open SQLite database {path}: ")
        assert reason in line


@pytest.mark.parametrize(
    "command",
    [
        ["db", "init"],
        ["db", "prune"],
        ["user", "list"],
        ["user", "add", "bob", "--password-stdin"],
        ["session", "revoke", "bob"],
    ],
)
def test_an_unreachable_mysql_database_is_one_line(home: Path, command: list[str]) -> None:
    env = env_for("mysql://root@127.0.0.1:1/gateway")
    result = run_gateway(home, env, *command, stdin="long-enough\n")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        "error: cannot connect to MySQL database 'gateway' at 127.0.0.1:1: "
        if command != ["db", "init"]
        else "error: cannot connect to MySQL at 127.0.0.1:1: "
    )
    assert "Connection refused" in result.stderr or "Can't connect" in result.stderr


async def test_a_schema_newer_than_the_gateway_is_one_line(
    workdir: Path, database_url: str
) -> None:
    env = env_for(database_url, JWT_SECRET=TEST_SECRET, GATEWAY_PORT=str(free_port()))
    assert (await asyncio.to_thread(run_gateway, workdir, env, "db", "init")).returncode == 0
    store = create_store(database_url)
    assert isinstance(store, SqlStore)
    await store.open()
    try:
        await store.execute("INSERT INTO gateway_schema (version) VALUES (99)")
    finally:
        await store.close()
    expected = (
        f"error: the database schema is version 99, newer than this gateway understands "
        f"({SCHEMA_VERSION}); upgrade the gateway"
    )
    for command in (["user", "list"], ["serve"]):
        result = await asyncio.to_thread(run_gateway, workdir, env, *command)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert result.stderr.splitlines()[-1] == expected


@pytest.fixture
def silent_mysql() -> Iterator[socket.socket]:
    """A port that accepts connections and never says a word, like a wedged server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.settimeout(20)
        yield sock


def env_against(silent: socket.socket, **settings: str) -> dict[str, str]:
    """The environment of a gateway command whose database is the silent server."""
    return env_for(
        f"mysql://root@127.0.0.1:{silent.getsockname()[1]}/gateway",
        JWT_SECRET=TEST_SECRET,
        GATEWAY_PORT=str(free_port()),
        **settings,
    )


@pytest.mark.parametrize("command", [["db", "init"], ["user", "list"], ["serve"]])
def test_a_mysql_server_that_never_answers_times_out_in_one_line(
    home: Path, silent_mysql: socket.socket, command: list[str]
) -> None:
    port = silent_mysql.getsockname()[1]
    env = env_against(silent_mysql, DATABASE_TIMEOUT="1s")
    started = time.monotonic()
    result = run_gateway(home, env, *command)
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].endswith(f"127.0.0.1:{port}: no answer within 1s")


@pytest.mark.parametrize("command", [["user", "list"], ["demo"], ["serve"]])
def test_ctrl_c_while_waiting_for_the_database_exits_without_a_traceback(
    home: Path, silent_mysql: socket.socket, command: list[str]
) -> None:
    env = env_against(
        silent_mysql, DATABASE_TIMEOUT="3s", UPSTREAM_URL=f"http://127.0.0.1:{free_port()}"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", *command],
        cwd=home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        connection, _ = silent_mysql.accept()  # the command is now waiting for the greeting
        with connection:
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert "Traceback" not in stderr
    assert "Exception ignored" not in stderr
    if command == ["serve"]:
        # Signals wait for start-up, so a migration is never cut in half: the wait ends at
        # the database timeout.
        assert proc.returncode == 1
        assert stderr.splitlines()[-1].endswith("no answer within 3s")
    else:
        assert (proc.returncode, stderr.count("error:")) == (130, 0)
