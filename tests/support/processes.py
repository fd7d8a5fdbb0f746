"""Real processes: free ports, waiting for a listener, the `gateway` command, logs to files."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .certificates import Issued


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"process exited early with code {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listened on {port} within {timeout}s")


class Processes:
    """Background processes whose output goes to files; all stopped at the end of the test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.running: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(
        self, name: str, args: list[str], cwd: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        log = self.directory / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, *args], cwd=cwd, env=env, stdout=out, stderr=out
            )
        self.running.append((proc, log))
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        return next(log for p, log in self.running if p is proc).read_text()

    def stop_all(self) -> None:
        for proc, _ in self.running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


REPO = Path(__file__).resolve().parents[2]


def env_for(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "GATEWAY_"))}
    env.update({"DATABASE_URL": database_url, **extra})
    return env


def run_gateway(
    workdir: Path,
    env: dict[str, str],
    *args: str,
    stdin: str | None = "",
    detached: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGS` to completion, with `stdin` as its input. `stdin=None`: stdin
    closed (`<&-`), as some service managers start it; `detached`: stdin from /dev/null and no
    controlling terminal, as under CI."""
    command = [sys.executable, "-m", "gateway", *args]
    if stdin is None:
        command = ["/bin/sh", "-c", 'exec "$0" -m gateway "$@" <&-', sys.executable, *args]
    return subprocess.run(
        command,
        cwd=workdir,
        env=env,
        input=None if detached else stdin,
        stdin=subprocess.DEVNULL if detached else None,
        start_new_session=detached,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def add_user_by_cli(
    workdir: Path, env: dict[str, str], name: str, password: str, *options: str
) -> None:
    """`gateway user add NAME --password-stdin [OPTIONS]`, which must succeed."""
    added = run_gateway(
        workdir, env, "user", "add", name, "--password-stdin", *options, stdin=f"{password}\n"
    )
    assert added.returncode == 0, added.stderr


def start_gateway_process(
    processes: Processes, workdir: Path, env: dict[str, str], *args: str, name: str = "gateway"
) -> tuple[subprocess.Popen[bytes], str]:
    """`gateway serve` as a real process on env's GATEWAY_PORT; returns it and its base URL."""
    proc = processes.start(name, ["-m", "gateway", "serve", *args], workdir, env)
    port = int(env["GATEWAY_PORT"])
    wait_for_port(port, proc, timeout=30)
    return proc, f"http://127.0.0.1:{port}"


@dataclass
class Deployment:
    """The shipped config.yaml in a work directory, set through environment variables as a user
    would: the gateway and the demo upstream as real processes on free ports."""

    processes: Processes
    workdir: Path
    env: dict[str, str]

    @classmethod
    def create(
        cls, processes: Processes, workdir: Path, *, database_url: str, **env: str
    ) -> Deployment:
        shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
        defaults = {
            "DATABASE_URL": database_url,
            "JWT_SECRET": secrets.token_urlsafe(48),
            "UPSTREAM_URL": f"http://127.0.0.1:{free_port()}",
            "GATEWAY_PORT": str(free_port()),
        }
        # The runner's own JWT_* and GATEWAY_* settings must not leak into the deployment.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "GATEWAY_"))}
        return cls(processes, workdir, {**inherited, **defaults, **env})

    @classmethod
    def with_tls(
        cls, processes: Processes, workdir: Path, certificate: Issued, **env: str
    ) -> Deployment:
        """`create` on SQLite, serving HTTPS with `certificate` (TLS_CERT_FILE, TLS_KEY_FILE)."""
        return cls.create(
            processes,
            workdir,
            database_url=f"sqlite:///{workdir / 'gw.db'}",
            TLS_CERT_FILE=str(certificate.cert_file),
            TLS_KEY_FILE=str(certificate.key_file),
            **env,
        )

    @property
    def upstream_port(self) -> int:
        return int(self.env["UPSTREAM_URL"].rsplit(":", 1)[1])

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """A `gateway` command in the work directory, with this deployment's environment."""
        return run_gateway(self.workdir, self.env, *args, stdin=stdin)

    def add_user(self, name: str, password: str) -> None:
        add_user_by_cli(self.workdir, self.env, name, password)

    def start_upstream(self) -> subprocess.Popen[bytes]:
        port = self.upstream_port
        proc = self.processes.start(
            "upstream", ["-m", "upstream_demo", "--port", str(port)], self.workdir, self.env
        )
        wait_for_port(port, proc)
        return proc

    def start_gateway(
        self, *args: str, name: str = "gateway", port: int | None = None
    ) -> tuple[subprocess.Popen[bytes], str]:
        """`gateway serve`, on the deployment's port or on `port` (another replica)."""
        env = self.env if port is None else {**self.env, "GATEWAY_PORT": str(port)}
        return start_gateway_process(self.processes, self.workdir, env, *args, name=name)
