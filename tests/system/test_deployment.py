"""Deployment files, checked offline: the Dockerfile lints, the compose file validates against the
Compose Specification, and the services it describes run natively with the same commands and
environment (service hosts mapped to 127.0.0.1), serving login -> /bbb -> refresh."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml
from yarl import URL

from tests.support.processes import REPO, Processes, add_user_by_cli, free_port, wait_for_port
from tests.support.services import mysql_args
from tests.support.wire import http

pytestmark = pytest.mark.mysql
BIN = str(Path(sys.executable).parent)
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} and $$ rules."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if operator and operator.endswith("?"):
            raise AssertionError(f"compose requires {name}: {argument}")
        return argument or ""

    return _VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def native_env(environment: dict[str, str]) -> dict[str, str]:
    """A service's environment with other services' host names pointing at this machine."""
    mapped = {}
    for key, value in environment.items():
        if re.fullmatch(r"[a-z]+://[^,\s]+", str(value)):
            url = URL(str(value))
            if url.host in COMPOSE["services"]:
                value = str(url.with_host("127.0.0.1"))
        mapped[key] = str(value)
    return mapped


def variables_the_gateway_reads() -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", (REPO / "config.yaml").read_text()))


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [f"{BIN}/hadolint", str(REPO / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_commands_that_exist() -> None:
    text = (REPO / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))  # type: ignore[union-attr]
    health = json.loads(re.search(r"CMD (\[\"gateway\", \"healthcheck\"\])", text).group(1))  # type: ignore[union-attr]
    assert "USER 10001:10001" in text
    for argv in (entrypoint + cmd, health):
        result = subprocess.run(
            [f"{BIN}/{argv[0]}", *argv[1:], "--help"], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr


def test_dockerfile_gives_sqlite_a_directory_the_gateway_user_can_write() -> None:
    # /app belongs to root: a `docker run` with the default sqlite:///gateway.db (relative to
    # /app) could not create its file as uid 10001.
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ENV DATABASE_URL=sqlite:////data/gateway\.db$", text, re.M), text
    made = re.search(r"^RUN mkdir /data && chown 10001:10001 /data$", text, re.M)
    assert made, "the Dockerfile must create /data owned by uid 10001"
    assert made.start() < text.index("USER 10001:10001")  # as root, before dropping privileges
    assert 'VOLUME ["/data"]' in text


def test_docker_image_listens_on_the_containers_interfaces() -> None:
    # The config's default host, 127.0.0.1, would be unreachable through `docker run -p`.
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ENV GATEWAY_HOST=0\.0\.0\.0$", text, re.M), text


def make_dry_run(tmp_path: Path, target: str) -> str:
    """What `make TARGET` would run in a fresh clone (no venv yet)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    result = subprocess.run(
        [
            make,
            "--dry-run",
            "--always-make",
            "--no-print-directory",
            f"VENV={tmp_path / 'venv'}",
            target,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_demo_installs_the_runtime_only(tmp_path: Path) -> None:
    commands = make_dry_run(tmp_path, "demo")
    assert "pip install --quiet -e .\n" in commands
    assert "[dev]" not in commands
    assert "httpbin" not in commands
    assert commands.rstrip().endswith("gateway demo")


@pytest.mark.parametrize("target", ["test", "lint"])
def test_make_test_and_lint_add_the_development_tools(tmp_path: Path, target: str) -> None:
    commands = make_dry_run(tmp_path, target)
    # From a fresh clone each target creates the venv itself (`.ci/run` runs lint, then test).
    assert "-m venv" in commands
    assert "pip install --quiet -e '.[dev]'" in commands
    assert ("pytest" if target == "test" else "mypy") in commands


def test_compose_file_matches_the_compose_specification() -> None:
    result = subprocess.run(
        [
            f"{BIN}/check-jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(REPO / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_only_the_gateway_publishes_a_port() -> None:
    published = [name for name, svc in COMPOSE["services"].items() if svc.get("ports")]
    assert published == ["gateway"]
    assert "mysql-data" in COMPOSE["volumes"]
    assert COMPOSE["services"]["gateway"]["depends_on"]["mysql"]["condition"] == "service_healthy"


def test_upstream_service_has_its_own_healthcheck() -> None:
    # It runs the gateway's image, whose HEALTHCHECK asks a gateway that is not there: left
    # inherited, the upstream would never turn healthy.
    upstream = COMPOSE["services"]["upstream"]
    check = upstream["healthcheck"]
    assert not check.get("disable")
    assert "gateway" not in check["test"]
    assert check["test"][0] == "CMD"
    gateway = COMPOSE["services"]["gateway"]
    assert gateway["depends_on"]["upstream"]["condition"] == "service_healthy"


def test_env_example_names_what_compose_requires() -> None:
    required = set(re.findall(r"\$\{([A-Z_]+):\?", (REPO / "docker-compose.yml").read_text()))
    listed = set(re.findall(r"^#?\s*([A-Z_]+)=", (REPO / ".env.example").read_text(), re.M))
    assert required <= listed
    assert ".env" in (REPO / ".gitignore").read_text().split()


def test_gateway_reads_every_variable_compose_gives_it() -> None:
    environment = COMPOSE["services"]["gateway"]["environment"]
    unread = set(environment) - variables_the_gateway_reads()
    assert not unread, f"compose sets variables the gateway never reads: {sorted(unread)}"


@pytest.fixture
def compose_env() -> Iterator[dict[str, str]]:
    """What .env would hold, plus free ports and a throwaway database for this run."""
    env = {
        "MYSQL_PASSWORD": secrets.token_hex(12),
        "MYSQL_ROOT_PASSWORD": secrets.token_hex(12),
        "MYSQL_DATABASE": f"gw_compose_{uuid.uuid4().hex[:10]}",
        "JWT_SECRET": secrets.token_urlsafe(48),
        "UPSTREAM_PORT": str(free_port()),
        "GATEWAY_PORT": str(free_port()),
    }
    mysql = interpolate(COMPOSE["services"]["mysql"]["environment"], env)
    conn = pymysql.connect(**mysql_args(), autocommit=True)
    user, database = mysql["MYSQL_USER"], mysql["MYSQL_DATABASE"]
    try:
        with conn.cursor() as cur:
            # What the mysql image does with these variables on first start.
            cur.execute(f"CREATE DATABASE `{database}`")
            password = conn.escape(mysql["MYSQL_PASSWORD"])
            for host in ("localhost", "127.0.0.1", "%"):
                cur.execute(f"CREATE USER IF NOT EXISTS '{user}'@'{host}' IDENTIFIED BY {password}")
                cur.execute(f"ALTER USER '{user}'@'{host}' IDENTIFIED BY {password}")
                cur.execute(f"GRANT ALL ON `{database}`.* TO '{user}'@'{host}'")
        yield env
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
        conn.close()


def test_compose_services_run_natively(
    tmp_path: Path, processes: Processes, compose_env: dict[str, str]
) -> None:
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    base = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    services = COMPOSE["services"]

    upstream = interpolate(services["upstream"], compose_env)
    argv = [*upstream["entrypoint"], *upstream["command"]]
    assert shutil.which(argv[0], path=base["PATH"]), argv[0]
    argv[0] = sys.executable if argv[0] == "python" else argv[0]
    upstream_proc = subprocess.Popen(
        argv, cwd=tmp_path, env=base, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(int(compose_env["UPSTREAM_PORT"]), upstream_proc)
        check = upstream["healthcheck"]["test"][1:]
        check[0] = sys.executable if check[0] == "python" else check[0]
        probe = subprocess.run(check, capture_output=True, text=True, timeout=10, check=False)
        assert probe.returncode == 0, probe.stderr  # the upstream's healthcheck passes

        gateway = interpolate(services["gateway"], compose_env)
        gateway_env = {**base, **native_env(gateway["environment"])}
        command = gateway["entrypoint"]
        assert command[:2] == ["sh", "-c"]
        for step in command[2].replace("exec ", "").split("&&"):
            assert shutil.which(step.split()[0], path=base["PATH"]), step
        proc = processes.start(
            "gateway-compose",
            ["-c", "import os, sys; os.execvp('sh', sys.argv[1:])", *command],
            tmp_path,
            gateway_env,
        )
        port = int(compose_env["GATEWAY_PORT"])
        wait_for_port(port, proc, timeout=60)

        add_user_by_cli(tmp_path, gateway_env, "guang", "compose-pass")
        url = f"http://127.0.0.1:{port}"
        status, pair = http(
            "POST", f"{url}/user/login", {"username": "guang", "password": "compose-pass"}
        )
        assert status == 200, pair
        assert http("GET", f"{url}/bbb", token=pair["access_token"]) == (200, "bbb")
        status, renewed = http("GET", f"{url}/user/refresh?refresh_token={pair['refresh_token']}")
        assert status == 200
        assert http("GET", f"{url}/bbb", token=renewed["access_token"]) == (200, "bbb")
        health = subprocess.run(
            [f"{BIN}/gateway", "healthcheck"],
            cwd=tmp_path,
            env=gateway_env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert health.returncode == 0, health.stderr
        log = processes.output(proc)
        assert "database ready" in log  # `gateway db init` ran before serving
        assert all(json.loads(line)["level"] for line in log.splitlines() if line.startswith("{"))
    finally:
        upstream_proc.kill()
        upstream_proc.wait()
