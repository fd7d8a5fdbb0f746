"""Every way a command can fail ends in one line `error: ...` on stderr, never a traceback."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.gateways import TEST_SECRET
from tests.support.processes import env_for, free_port, run_gateway


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: these failures are not about the database (see test_database_failures)."""
    return f"sqlite:///{tmp_path / 'gateway.db'}"


def error_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The one error line of a failed command (log lines may come before it)."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_busy_port_names_the_port_and_the_setting(
    workdir: Path, database_url: str, busy_port: int, workers: str
) -> None:
    env = env_for(database_url, JWT_SECRET=TEST_SECRET, GATEWAY_PORT=str(busy_port))
    result = run_gateway(workdir, env, "serve", "--workers", workers)
    assert error_line(result) == (
        f"error: port {busy_port} is already in use, so the gateway cannot listen on "
        f"127.0.0.1:{busy_port}: set GATEWAY_PORT (server.port in config.yaml) to a free port, "
        f"e.g. GATEWAY_PORT={busy_port + 1}"
    )


def test_demo_on_a_busy_gateway_port_names_it(
    workdir: Path, database_url: str, busy_port: int
) -> None:
    env = env_for(
        database_url,
        GATEWAY_PORT=str(busy_port),
        UPSTREAM_URL=f"http://127.0.0.1:{free_port()}",
    )
    line = error_line(run_gateway(workdir, env, "demo"))
    assert f"port {busy_port} is already in use, so the gateway cannot listen" in line
    assert "set GATEWAY_PORT (server.port in config.yaml) to a free port" in line


def test_demo_on_a_busy_upstream_port_names_upstream_url(
    workdir: Path, database_url: str, busy_port: int
) -> None:
    env = env_for(
        database_url,
        GATEWAY_PORT=str(free_port()),
        UPSTREAM_URL=f"http://127.0.0.1:{busy_port}",
    )
    assert error_line(run_gateway(workdir, env, "demo")) == (
        f"error: port {busy_port} is already in use, so the demo upstream cannot listen on "
        f"127.0.0.1:{busy_port}: set UPSTREAM_URL (upstreams.demo.url in config.yaml) to a free "
        f"port, e.g. UPSTREAM_URL=http://127.0.0.1:{busy_port + 1}"
    )


def test_demo_with_one_port_for_upstream_and_gateway_says_so(
    workdir: Path, database_url: str
) -> None:
    port = free_port()
    env = env_for(database_url, GATEWAY_PORT=str(port), UPSTREAM_URL=f"http://127.0.0.1:{port}")
    line = error_line(run_gateway(workdir, env, "demo"))
    assert f"both want port {port}" in line


def test_serve_on_an_address_not_on_this_machine_names_the_host_setting(
    workdir: Path, database_url: str
) -> None:
    env = env_for(database_url, JWT_SECRET=TEST_SECRET, GATEWAY_HOST="192.0.2.1")
    line = error_line(run_gateway(workdir, env, "serve"))
    assert "the gateway cannot listen on 192.0.2.1:8080 (Cannot assign requested address)" in line
    assert "check GATEWAY_HOST (server.host in config.yaml)" in line


@pytest.mark.parametrize("command", ["add", "passwd"])
def test_a_password_prompt_without_a_terminal_says_to_use_password_stdin(
    workdir: Path, database_url: str, command: str
) -> None:
    env = env_for(database_url)
    for result in (
        run_gateway(workdir, env, "user", command, "bob", detached=True),
        run_gateway(workdir, env, "user", command, "bob", stdin=None),
    ):
        assert error_line(result) == (
            "error: no terminal to ask for the password on: pipe it in with --password-stdin"
        )


def test_password_stdin_that_is_closed_or_empty_says_so(workdir: Path, database_url: str) -> None:
    env = env_for(database_url)
    closed = run_gateway(workdir, env, "user", "add", "bob", "--password-stdin", stdin=None)
    assert error_line(closed) == "error: no password on stdin: it is closed"
    empty = run_gateway(workdir, env, "user", "add", "bob", "--password-stdin", detached=True)
    assert error_line(empty) == "error: no password on stdin: write it as one line"


def test_a_password_that_is_not_utf8_is_refused(workdir: Path, database_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "user", "add", "bob", "--password-stdin"],
        cwd=workdir,
        env=env_for(database_url),
        input=b"\xff\xfe-not-text\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    stderr = result.stderr.decode()
    assert (result.returncode, stderr.strip()) == (1, "error: the password is not valid UTF-8 text")


@pytest.mark.parametrize("command", [["serve"], ["demo"], ["user", "list"], ["check-config"]])
def test_config_the_parser_cannot_read_is_a_configuration_error(
    workdir: Path, command: list[str]
) -> None:
    (workdir / "latin1.yaml").write_bytes("server:\n  host: caf\xe9\n".encode("latin-1"))
    cases = [
        (
            {"DATABASE_URL": "mysql://root@127.0.0.1:99999/gateway"},
            "config.yaml: a value cannot be parsed: Port out of range 0-65535",
        ),
        (
            {"UPSTREAM_URL": "http://[::1"},
            "config.yaml: a value cannot be parsed: Invalid IPv6 URL",
        ),
        ({"CONFIG": "latin1.yaml"}, "latin1.yaml: line 2: not UTF-8 text"),
        ({"CONFIG": "missing.yaml"}, "missing.yaml: cannot read the config file"),
    ]
    for extra, problem in cases:
        config = extra.pop("CONFIG", "config.yaml")
        env = env_for(extra.get("DATABASE_URL", "sqlite:///gateway.db"), JWT_SECRET=TEST_SECRET)
        env.update(extra)
        result = run_gateway(workdir, env, *command, "--config", config)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith("configuration error:\n")
        assert problem in result.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly(workdir: Path, database_url: str) -> None:
    assert run_gateway(workdir, env_for(database_url), "db", "init").returncode == 0
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `gateway user list | head -0` once head has exited
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "user", "list"],
            cwd=workdir,
            env=env_for(database_url),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (1, "")


def test_an_unexpected_failure_is_one_line_with_the_traceback_at_debug(
    workdir: Path, database_url: str
) -> None:
    program = (
        "import gateway.cli.admin as admin\n"
        "def broken(args):\n"
        "    raise ZeroDivisionError('a bug')\n"
        "admin.user_list = broken\n"
        "from gateway.cli import main\n"
        "main(['user', 'list', *__import__('sys').argv[1:]])\n"
    )
    for extra in ([], ["--log-level", "debug"]):
        result = subprocess.run(
            [sys.executable, "-c", program, *extra],
            cwd=workdir,
            env=env_for(database_url),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1
        assert result.stderr.splitlines()[-1] == (
            "error: unexpected ZeroDivisionError: a bug "
            "(a bug: please report it; --log-level debug shows where)"
        )
        assert ("Traceback" in result.stderr) == bool(extra)  # in the debug log line only


@pytest.fixture
def not_http() -> Iterator[int]:
    """A port where something answers that is not HTTP."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()

        def answer() -> None:
            connection, _ = sock.accept()
            with connection:
                connection.recv(1000)
                connection.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        yield sock.getsockname()[1]
        thread.join(timeout=10)


def test_healthcheck_of_something_that_is_not_http_is_unhealthy(
    workdir: Path, database_url: str, not_http: int
) -> None:
    result = run_gateway(workdir, env_for(database_url, GATEWAY_PORT=str(not_http)), "healthcheck")
    url = f"http://127.0.0.1:{not_http}/healthz"
    assert (result.returncode, result.stderr) == (
        1,
        f"unhealthy: {url}: not an HTTP answer: SSH-2.0-OpenSSH_9.6\n",
    )


def test_healthcheck_of_an_ipv6_host_builds_a_valid_url(workdir: Path, database_url: str) -> None:
    port = free_port()
    env = env_for(database_url, GATEWAY_HOST="::1", GATEWAY_PORT=str(port))
    result = run_gateway(workdir, env, "healthcheck")
    assert result.returncode == 1
    assert result.stderr.startswith(f"unhealthy: http://[::1]:{port}/healthz: <urlopen error")


class Terminal:
    """The command on a pseudo-terminal of its own, as a person at a keyboard runs it."""

    def __init__(self, workdir: Path, env: dict[str, str], *args: str) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", *args],
            cwd=workdir,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            # The new session takes the pty as its controlling terminal, for getpass and ^C.
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.output = b""

    def wait_for(self, text: bytes) -> None:
        deadline = time.monotonic() + 30
        while text not in self.output:
            assert time.monotonic() < deadline, self.output
            if select.select([self.master], [], [], 0.2)[0]:
                self.output += os.read(self.master, 4096)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def finish(self) -> tuple[int, str]:
        code = self.proc.wait(timeout=30)
        with contextlib.suppress(OSError):  # EIO once the other side has closed
            while select.select([self.master], [], [], 0.2)[0]:
                chunk = os.read(self.master, 4096)
                if not chunk:
                    break
                self.output += chunk
        os.close(self.master)
        return code, self.output.decode(errors="replace")


@pytest.mark.parametrize(
    ("keys", "code", "said"),
    [
        (b"\x03", 130, ""),  # Ctrl-C
        (b"\x04", 1, "error: no password given"),  # Ctrl-D
        (b"first-pass\rother-pass\r", 1, "error: the passwords do not match"),
        (b"good-pass1\rgood-pass1\r", 0, "added user bob"),
    ],
)
def test_the_password_prompt_at_a_terminal(
    workdir: Path, database_url: str, keys: bytes, code: int, said: str
) -> None:
    terminal = Terminal(workdir, env_for(database_url), "user", "add", "bob")
    terminal.wait_for(b"Password: ")
    if len(keys) > 1:
        first, second = keys.split(b"\r")[:2]
        terminal.type(first + b"\r")
        terminal.wait_for(b"Repeat password: ")
        terminal.type(second + b"\r")
    else:
        terminal.type(keys)
    returncode, output = terminal.finish()
    assert returncode == code, output
    assert said in output
    assert "Traceback" not in output
    for typed in keys.split(b"\r"):
        if len(typed) > 1:
            assert typed.decode() not in output  # never echoed
