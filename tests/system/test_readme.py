"""The README's shell and Python snippets, run as written against a live `gateway demo`.

Every ```sh and ```python block runs unless an HTML comment right before it says
`<!-- not run: why -->`; those are reported as skipped, with the reason. Shell blocks run in
bash under `set -euo pipefail`, Python blocks with this venv's Python; each must exit 0, and every
`# -> text` line in a block must appear in its output, in that order. The demo listens on free
ports, so `127.0.0.1:8080` in a snippet becomes the demo's address; HOME is a temporary directory,
so nothing lands in the real home.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pymysql
import pytest
from yarl import URL

from tests.support.gateways import TEST_SECRET
from tests.support.processes import (
    REPO,
    Deployment,
    Processes,
    free_port,
    wait_for_port,
)
from tests.support.services import IN_CI, MYSQL_URL, mysql_args
from tests.support.wire import http

README = (REPO / "README.md").read_text()
README_ADDRESS = "127.0.0.1:8080"
_BLOCK = re.compile(
    r"^(?:<!--(?P<note>[^\n]*?)-->\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$", re.M | re.S
)
_NOT_RUN = re.compile(r"\s*not run:\s*(?P<reason>\S.*?)\s*$")


@dataclass(frozen=True)
class Snippet:
    lang: str
    body: str
    line: int
    skip: str | None  # why it is not run, from its <!-- not run: ... --> comment

    @property
    def id(self) -> str:
        return f"{self.lang}-line{self.line}"

    @property
    def expected(self) -> list[str]:
        """The `# -> text` lines: output the README shows."""
        marker = "# -> "
        lines = (line.strip() for line in self.body.splitlines())
        return [line[len(marker) :] for line in lines if line.startswith(marker)]


def readme_blocks() -> list[Snippet]:
    blocks = []
    for match in _BLOCK.finditer(README):
        note = match.group("note")
        skip = None
        if note is not None:
            reason = _NOT_RUN.fullmatch(note)
            assert reason, f"README: a comment before a block must say 'not run: why': {note!r}"
            skip = reason.group("reason")
        line = README.count("\n", 0, match.start("lang")) + 1
        blocks.append(Snippet(match.group("lang"), match.group("body"), line, skip))
    return blocks


SNIPPETS = [block for block in readme_blocks() if block.lang in ("sh", "python")]


def snippet_params() -> list[object]:
    return [
        pytest.param(
            snippet,
            id=snippet.id,
            marks=[pytest.mark.skip(reason=f"README not run: {snippet.skip}")]
            if snippet.skip
            else [],
        )
        for snippet in SNIPPETS
    ]


@dataclass(frozen=True)
class Demo:
    base: str
    address: str
    directory: Path
    log: Path


@pytest.fixture(scope="module")
def live_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`python -m gateway demo` in a fresh directory with the shipped config, on free ports."""
    directory = tmp_path_factory.mktemp("readme-demo")
    shutil.copy(REPO / "config.yaml", directory / "config.yaml")
    port, upstream_port = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("JWT_", "GATEWAY_"))
        and key not in ("DATABASE_URL", "UPSTREAM_URL", "REDIS_URL")
    }
    env.update(GATEWAY_PORT=str(port), UPSTREAM_URL=f"http://127.0.0.1:{upstream_port}")
    processes = Processes(directory)
    try:
        proc = processes.start("demo", ["-m", "gateway", "demo"], directory, env)
        wait_for_port(port, proc, timeout=30)  # the gateway starts after the upstream
        yield Demo(
            f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", directory, directory / "demo.log"
        )
    finally:
        processes.stop_all()


def assert_shows(output: str, expected: list[str]) -> None:
    position = 0
    for text in expected:
        found = output.find(text, position)
        assert found >= 0, f"expected {text!r} (after offset {position}) in:\n{output}"
        position = found + len(text)


@pytest.mark.parametrize("snippet", snippet_params())
def test_readme_snippet_runs_as_written(snippet: Snippet, live_demo: Demo, tmp_path: Path) -> None:
    body = snippet.body.replace(README_ADDRESS, live_demo.address)
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    if snippet.lang == "sh":
        bash = shutil.which("bash")
        assert bash, "bash is needed to run the README's shell snippets"
        if shutil.which("curl") is None:
            if IN_CI:
                raise AssertionError("CI needs curl for the README's shell snippets")
            pytest.skip("curl is not installed")
        argv = [bash, "-c", "set -euo pipefail\n" + body]
    else:
        script = tmp_path / "snippet.py"
        script.write_text(body)
        argv = [sys.executable, str(script)]
    result = subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"README line {snippet.line} failed:\n{output}"
    assert_shows(result.stdout, snippet.expected)
    assert not (tmp_path / "~").exists()  # a "~/..." path meant the home directory


def test_readme_runs_the_walk_through_and_the_python_client() -> None:
    runnable = [snippet for snippet in SNIPPETS if snippet.skip is None]
    assert {snippet.lang for snippet in runnable} == {"sh", "python"}
    walk_through = next(s for s in runnable if s.lang == "sh")
    for variable in ("ACCESS", "REFRESH", "NEW_REFRESH"):
        # Every variable the walk-through uses, it also sets.
        assert re.search(rf"^{variable}=", walk_through.body, re.M), variable
    python = next(s for s in runnable if s.lang == "python")
    assert "asyncio.run(main())" in python.body
    assert python.expected, "the Python client snippet shows what it prints"


def test_the_demo_prints_only_commands_the_walk_through_has(live_demo: Demo) -> None:
    deadline = time.monotonic() + 10
    while "Stop with Ctrl-C" not in live_demo.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    printed = [line for line in live_demo.log.read_text().splitlines() if "curl " in line]
    assert printed, live_demo.log.read_text()
    walk_through = next(s for s in SNIPPETS if s.skip is None and s.lang == "sh").body
    shown = set(re.findall(rf"http://{re.escape(README_ADDRESS)}(/[^\s\"'?;]*)", walk_through))
    for line in printed:
        paths = re.findall(rf"{re.escape(live_demo.base)}(/[^\s\"'?;]*)", line)
        assert paths and set(paths) <= shown, (line, shown)


def test_demo_log_tells_the_upstream_from_the_gateway(live_demo: Demo) -> None:
    """Lines from upstream_demo.access are the upstream's, from aiohttp.access the gateway's."""
    assert http("GET", f"{live_demo.base}/aaa") == (200, "aaa")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [line for line in live_demo.log.read_text().splitlines() if "GET /aaa" in line]
        upstream = [line for line in lines if " upstream_demo.access: " in line]
        gateway = [line for line in lines if " aiohttp.access: " in line]
        if upstream and gateway:
            break
        time.sleep(0.1)
    assert upstream and gateway, lines
    assert "upstream_demo.access" in README and "aiohttp.access" in README


def test_readme_names_test_and_bench_files_that_exist() -> None:
    named = set(re.findall(r"\b((?:tests|bench)/[\w/]+\.(?:py|html))\b", README))
    assert named
    missing = sorted(path for path in named if not (REPO / path).exists())
    assert not missing, f"the README names files that do not exist: {missing}"


@pytest.mark.mysql
def test_readme_mariadb_account_works_with_its_url_encoded_password(
    tmp_path: Path, processes: Processes
) -> None:
    """The README's CREATE DATABASE / CREATE USER / GRANT and its DATABASE_URL, on throwaway
    names: the password holds '@' and '/', percent-encoded in the URL."""
    sql = next(block for block in readme_blocks() if block.lang == "sql").body
    url = re.search(r"DATABASE_URL='(mysql://[^']+)'", README)
    assert url, "the README's production example sets DATABASE_URL"
    password = re.search(r"IDENTIFIED BY '([^']+)'", sql)
    assert password and URL(url.group(1)).password == password.group(1)
    assert {"@", "/"} <= set(password.group(1)), "the example shows the characters that need it"
    server = URL(MYSQL_URL)
    if server.host not in ("127.0.0.1", "localhost"):
        pytest.skip("the README's account is for 127.0.0.1; TEST_MYSQL_URL is elsewhere")

    name = f"gw_readme_{uuid.uuid4().hex[:8]}"
    statements = [s for s in re.sub(r"\bgateway\b", name, sql).split(";") if s.strip()]
    database_url = re.sub(r"\bgateway\b", name, url.group(1)).replace(
        "127.0.0.1:3306", f"127.0.0.1:{server.port or 3306}"
    )
    root = pymysql.connect(**mysql_args(), autocommit=True)
    try:
        with root.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
        deployment = Deployment.create(
            processes, tmp_path, database_url=database_url, JWT_SECRET=TEST_SECRET
        )
        init = deployment.run("db", "init")
        assert init.returncode == 0, init.stderr
        password_of_alice = secrets.token_urlsafe(12)
        deployment.add_user("alice", password_of_alice)
        _, base = deployment.start_gateway()
        status, pair = http(
            "POST", f"{base}/user/login", {"username": "alice", "password": password_of_alice}
        )
        assert status == 200, pair
    finally:
        with root.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{name}'@'127.0.0.1'")
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        root.close()
