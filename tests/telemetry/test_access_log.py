"""Access lines formatted directly: the same fields, order, escaping and redaction as the
`logging` record of the same request formatted by `JsonFormatter` or the text format."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.request_keys import CLIENT, REQUEST_ID, ROUTE_NAME, STARTED, UPSTREAM_NAME, USER_ID
from gateway.telemetry.access_log import AccessLog, AccessLogger
from gateway.telemetry.logs import LogOutput
from gateway.telemetry.redaction import loggable_path

HOSTILE_PATH = '/it"em\\s/%00/\x01\u00e9\n{"status": 200}?refresh_token=secret'


class Capture(logging.Handler):
    """Formats each record the way the process output would."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class Installed:
    def __init__(self, tmp_path: Path, json_lines: bool) -> None:
        self.path = tmp_path / "stderr.log"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.output = LogOutput(self.fd, json_lines=json_lines)

    def lines(self) -> list[str]:
        self.output.flush()
        return self.path.read_text().splitlines()


@pytest.fixture(params=["json", "text"])
def installed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Installed]:
    """A LogOutput on the root logger, as `configure_logging` leaves it, at level info."""
    out = Installed(tmp_path, json_lines=request.param == "json")
    root = logging.getLogger()
    level = root.level
    root.addHandler(out.output)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(out.output)
        root.setLevel(level)
        out.output.close()
        os.close(out.fd)


def proxied(path: str = "/bbb/items/42?token=secret", **keys: str) -> web.Request:
    request = make_mocked_request("GET", path)
    request[REQUEST_ID] = keys.get("request_id", "log-me-1")
    request[CLIENT] = keys.get("client", "127.0.0.1")
    request[ROUTE_NAME] = keys.get("route", "bbb")
    request[UPSTREAM_NAME] = "demo"
    request[USER_ID] = "1"
    return request


def as_record(request: web.Request, status: int, seconds: float, aborted: str | None) -> str:
    """The same request through the `logging` path, formatted by the output's formatter."""
    output = LogOutput.installed()
    assert output is not None and output.formatter is not None
    capture = Capture(output.formatter)
    logger = logging.getLogger("aiohttp.access")
    logger.addHandler(capture)
    logger.propagate = False
    try:
        AccessLog().write(request, status, seconds, aborted)  # not opened: records
    finally:
        logger.propagate = True
        logger.removeHandler(capture)
    [line] = capture.lines
    return line


def without_time(line: str, json_lines: bool) -> object:
    if json_lines:
        entry = json.loads(line)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry.pop("time"))
        return list(entry.items())  # the order of the fields too
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", line)
    return line[24:]


@pytest.mark.parametrize(
    ("request_", "status", "aborted"),
    [
        (proxied(), 200, None),
        (proxied(HOSTILE_PATH, client='1.2.3.4"\x7f', route='/a "b" GET,HEAD'), 404, None),
        (proxied("/slow"), 499, "upstream_wait"),
        (make_mocked_request("POST", "/nowhere"), 405, None),  # no keys at all
    ],
)
def test_a_line_is_what_the_logging_record_of_the_request_would_be(
    installed: Installed, request_: web.Request, status: int, aborted: str | None
) -> None:
    access_log = AccessLog()
    access_log.open()
    access_log.write(request_, status, 0.0012345, aborted)
    [line] = [x for x in installed.lines() if "aiohttp.access" in x]
    expected = as_record(request_, status, 0.0012345, aborted)
    json_lines = installed.output.json_lines
    assert without_time(line, json_lines) == without_time(expected, json_lines)


def test_a_line_never_carries_the_query_string_nor_a_raw_control_character(
    installed: Installed,
) -> None:
    access_log = AccessLog()
    access_log.open()
    access_log.write(proxied(HOSTILE_PATH), 200, 0.001)
    [line] = [x for x in installed.lines() if "aiohttp.access" in x]
    assert "secret" not in line and "refresh_token" not in line
    assert line.isprintable() and line.isascii()
    if installed.output.json_lines:
        entry = json.loads(line)
        assert entry["path"] == loggable_path(make_mocked_request("GET", HOSTILE_PATH))
        assert entry["status"] == 200 and "aborted" not in entry
        assert (entry["duration_ms"], entry["user_id"], entry["route"]) == (1.0, "1", "bbb")


@pytest.mark.parametrize(("level", "enabled"), [(logging.WARNING, True), (logging.INFO, False)])
def test_the_level_or_the_config_turns_the_access_log_off(
    installed: Installed, level: int, enabled: bool
) -> None:
    logging.getLogger().setLevel(level)
    access_log = AccessLog(enabled=enabled)
    access_log.open()
    access_log.write(proxied(), 200, 0.001)
    access_log.flush()
    assert not any("aiohttp.access" in line for line in installed.lines())


def test_aiohttps_hook_writes_only_what_the_app_never_saw(installed: Installed) -> None:
    hook = AccessLogger(logging.getLogger("aiohttp.access"), "")
    seen = proxied("/seen")
    seen[STARTED] = 1.0  # the middleware has written its line
    hook.log(seen, web.Response(status=200), 0.001)
    hook.log(make_mocked_request("GET", "/refused"), web.Response(status=400), 0.001)
    lines = [x for x in installed.lines() if "aiohttp.access" in x]
    assert len(lines) == 1 and "/refused" in lines[0] and "/seen" not in lines[0]
