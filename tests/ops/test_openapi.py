"""The shipped OpenAPI document is served, and schemathesis finds no failure against a live
gateway: no 5xx, every status, header, content type and body as documented, bad input refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.processes import (
    Processes,
    add_user_by_cli,
    free_port,
    start_gateway_process,
)
from tests.support.wire import raw_get

BIN = Path(sys.executable).parent
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
)


def test_schemathesis_finds_nothing(
    tmp_path: Path, database_url: str, processes: Processes
) -> None:
    (tmp_path / "config.yaml").write_text((Path(__file__).parents[2] / "config.yaml").read_text())
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GATEWAY_PORT": str(port),
        "JWT_SECRET": "s" * 40,
        "LOG_FORMAT": "text",
        "LOGIN_MAX_FAILURES": "0",
    }
    add_user_by_cli(tmp_path, env, "guang", "12345678")
    _, base = start_gateway_process(processes, tmp_path, env)
    status, _, body = raw_get(f"{base}/openapi.json")
    assert status == 200 and b'"openapi": "3.0.3"' in body

    result = subprocess.run(
        [
            str(BIN / "st"),
            "run",
            f"{base}/openapi.json",
            "--url",
            base,
            "--checks",
            CHECKS,
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report[-6000:]
    log = processes.output(processes.running[0][0])
    assert "Traceback" not in log and "unhandled error" not in log
