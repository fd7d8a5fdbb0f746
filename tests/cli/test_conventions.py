"""Command-line conventions: --version, and global options before or after the subcommand."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pytest

from tests.support.gateways import TEST_SECRET
from tests.support.processes import env_for, run_gateway


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: none of this is about the database."""
    return f"sqlite:///{tmp_path / 'gateway.db'}"


def test_version_comes_from_the_package_metadata(workdir: Path, database_url: str) -> None:
    result = run_gateway(workdir, env_for(database_url), "--version")
    assert (result.returncode, result.stdout) == (
        0,
        f"gateway {importlib.metadata.version('auth-gateway')}\n",
    )


def test_config_is_accepted_before_and_after_the_subcommand(
    workdir: Path, database_url: str
) -> None:
    env = env_for(database_url, JWT_SECRET=TEST_SECRET)
    (workdir / "elsewhere").mkdir()
    shutil.move(workdir / "config.yaml", workdir / "elsewhere" / "gateway.yaml")
    config = str(workdir / "elsewhere" / "gateway.yaml")
    for args in (["--config", config, "check-config"], ["check-config", "--config", config]):
        result = run_gateway(workdir, env, *args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"{config}: OK")
    # Given twice, the one after the subcommand wins.
    both = run_gateway(workdir, env, "--config", "missing.yaml", "check-config", "--config", config)
    assert both.returncode == 0, both.stderr
    nested = run_gateway(workdir, env, "--config", config, "user", "role", "add", "nobody", "ops")
    assert nested.returncode == 1
    assert nested.stderr.splitlines()[-1] == "error: no user named 'nobody'"


def test_log_level_is_accepted_before_and_after_the_subcommand(
    workdir: Path, database_url: str
) -> None:
    env = env_for(database_url)
    assert run_gateway(workdir, env, "db", "init").returncode == 0
    for args in (
        ["--log-level", "debug", "user", "list"],
        ["user", "list", "--log-level", "debug"],
    ):
        result = run_gateway(workdir, env, *args)
        assert result.returncode == 0, result.stderr
        assert " DEBUG " in result.stderr
    quiet = run_gateway(
        workdir, env, "--log-level", "debug", "user", "list", "--log-level", "error"
    )
    assert (quiet.returncode, quiet.stderr) == (0, "")
