"""About a minute of mixed traffic at high concurrency against real processes on MariaDB
(bench/soak.py runs the same soak for longer): no 5xx, every good request served, every bad one
refused, no session forked, RSS and file descriptors flat."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.processes import (
    REPO,
    Deployment,
    Processes,
)
from tests.support.services import MySqlDatabase

pytestmark = pytest.mark.mysql
SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "45"))


def load_soak() -> ModuleType:
    # bench/ scripts import their shared helpers (bench/harness.py) as a sibling module.
    if str(REPO / "bench") not in sys.path:
        sys.path.append(str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location("soak", REPO / "bench" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


async def test_soak(tmp_path: Path, processes: Processes, mysql_database: MySqlDatabase) -> None:
    soak = load_soak()
    deployment = Deployment.create(
        processes,
        tmp_path,
        database_url=mysql_database.url,
        TRUSTED_PROXIES="127.0.0.1",
        LOG_LEVEL="warning",
        # Every worker holds a session of the one soak user, and some log in again.
        SESSIONS_MAX_PER_USER="0",
    )
    deployment.add_user("soak", soak.PASSWORD)
    deployment.start_upstream()
    gateway, base = deployment.start_gateway()
    report = await soak.soak(
        base, gateway.pid, seconds=SOAK_SECONDS, concurrency=48, username="soak"
    )
    print(report.summary())
    assert report.requests > 1000
    assert report.good_ok > 0 and report.bad_refused > 0
    assert report.violations() == []
    assert "Traceback" not in processes.output(gateway)
