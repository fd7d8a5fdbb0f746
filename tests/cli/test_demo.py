"""`gateway demo` tells the truth about its demo user."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.support.processes import Processes, env_for, free_port, run_gateway, wait_for_port

LOGIN_AS_GUANG = '"username":"guang","password":"123456"'
LOGIN_AS_SOMEONE = '"username":"<username>","password":"<password>"'


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: what the demo says does not depend on the backend."""
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    return env_for(
        database_url,
        GATEWAY_PORT=str(free_port()),
        UPSTREAM_URL=f"http://127.0.0.1:{free_port()}",
    )


def demo_banner(processes: Processes, workdir: Path, env: dict[str, str]) -> str:
    """Run `gateway demo` until it has printed its banner, stop it, return what it printed."""
    demo = processes.start(f"demo-{time.monotonic_ns()}", ["-m", "gateway", "demo"], workdir, env)
    wait_for_port(int(env["GATEWAY_PORT"]), demo)
    deadline = time.monotonic() + 20
    while "Stop with Ctrl-C." not in processes.output(demo):
        assert time.monotonic() < deadline, processes.output(demo)
        time.sleep(0.1)
    demo.send_signal(signal.SIGINT)
    assert demo.wait(timeout=20) == 0
    return processes.output(demo)


def gateway(workdir: Path, env: dict[str, str], *args: str, stdin: str = "") -> None:
    result = run_gateway(workdir, env, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr


def test_the_demo_says_it_created_its_user_then_that_it_found_it(
    workdir: Path, env: dict[str, str], processes: Processes
) -> None:
    created = demo_banner(processes, workdir, env)
    assert "Demo user: guang / 123456 (created now)" in created
    assert LOGIN_AS_GUANG in created
    again = demo_banner(processes, workdir, env)
    assert "Demo user: guang / 123456 (already in the database)" in again
    assert LOGIN_AS_GUANG in again


def test_the_demo_does_not_claim_a_password_its_user_no_longer_has(
    workdir: Path, env: dict[str, str], processes: Processes
) -> None:
    demo_banner(processes, workdir, env)
    gateway(workdir, env, "user", "passwd", "guang", "--password-stdin", stdin="not-123456\n")
    changed = demo_banner(processes, workdir, env)
    assert "Demo user: guang exists with a password other than 123456 (left as it is" in changed
    assert "guang / 123456" not in changed
    assert LOGIN_AS_SOMEONE in changed


def test_the_demo_says_when_its_user_is_disabled(
    workdir: Path, env: dict[str, str], processes: Processes
) -> None:
    demo_banner(processes, workdir, env)
    gateway(workdir, env, "user", "disable", "guang")
    disabled = demo_banner(processes, workdir, env)
    assert "Demo user: guang / 123456 exists but is disabled (`gateway user enable guang`)" in (
        disabled
    )
    assert LOGIN_AS_SOMEONE in disabled


def test_the_demo_says_it_did_not_create_its_user_next_to_real_ones(
    workdir: Path, env: dict[str, str], processes: Processes
) -> None:
    gateway(workdir, env, "user", "add", "realuser", "--password-stdin", stdin="real-password\n")
    banner = demo_banner(processes, workdir, env)
    assert (
        "No demo user: guang / 123456 was not created because the database has other users"
        in banner
    )
    assert "Demo user: guang" not in banner
    assert LOGIN_AS_SOMEONE in banner
