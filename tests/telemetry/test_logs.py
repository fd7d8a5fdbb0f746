"""The process's log output: batched lines, records at once, order kept, nothing lost at the end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from pathlib import Path

from gateway.telemetry.logs import LogOutput


def output_to(tmp_path: Path, interval: float = 0.05) -> tuple[LogOutput, Path, int]:
    path = tmp_path / "stderr.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return LogOutput(fd, json_lines=False, interval=interval), path, fd


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("gateway.test", logging.WARNING, __file__, 1, message, (), None)


def test_lines_wait_for_a_batch_and_records_follow_them_at_once(tmp_path: Path) -> None:
    output, path, fd = output_to(tmp_path)
    try:
        output.append("line 1")
        output.append("line 2")
        assert path.read_text() == ""  # buffered: no write per line
        output.handle(record("a warning"))
        assert path.read_text().splitlines()[:2] == ["line 1", "line 2"]
        assert path.read_text().splitlines()[2].endswith("WARNING gateway.test: a warning")
    finally:
        output.close()
        os.close(fd)


async def test_the_loop_writes_batches_without_being_asked(tmp_path: Path) -> None:
    output, path, fd = output_to(tmp_path, interval=0.02)
    try:
        output.start()
        for i in range(1000):
            output.append(f"line {i}")
        # Whole batches went at once; the rest goes after the interval.
        assert len(path.read_text().splitlines()) == 1000 - 1000 % 256
        await asyncio.sleep(0.1)
        assert path.read_text().splitlines() == [f"line {i}" for i in range(1000)]
    finally:
        output.close()
        os.close(fd)


async def test_a_full_pipe_never_blocks_the_loop_and_loses_no_line() -> None:
    read_end, write_end = os.pipe()
    output = LogOutput(write_end, json_lines=False, interval=0.01)
    try:
        output.start()
        lines = [f"line {i} " + "x" * 200 for i in range(2000)]  # ~400 KiB: past a pipe's 64
        started = time.monotonic()
        for line in lines:
            output.append(line)
        await asyncio.sleep(0.05)
        assert time.monotonic() - started < 1.0  # nothing waited for the reader
        received = b""
        deadline = time.monotonic() + 10
        os.set_blocking(read_end, False)
        while received.count(b"\n") < len(lines) and time.monotonic() < deadline:
            with contextlib.suppress(BlockingIOError):
                received += os.read(read_end, 1 << 16)
            await asyncio.sleep(0.001)  # the loop writes the rest as the pipe drains
        assert received.decode().splitlines() == lines
        assert os.get_blocking(write_end)  # the process's own descriptor was left as it was
    finally:
        output.close()
        os.close(read_end)
        os.close(write_end)


async def test_a_stalled_reader_costs_the_loop_no_more_per_line_as_the_backlog_grows() -> None:
    # Each batch waiting for the pipe is kept as it came: copying the whole backlog on every
    # batch made 200,000 lines take 13 s instead of a fraction of one.
    read_end, write_end = os.pipe()
    output = LogOutput(write_end, json_lines=False)
    try:
        output.start()
        line = "x" * 200
        started = time.process_time()
        for _ in range(200_000):
            output.append(line)
        assert time.process_time() - started < 2.0
        os.set_blocking(read_end, False)
        received = 0
        deadline = time.monotonic() + 30
        while received < 200_000 * 201 and time.monotonic() < deadline:
            with contextlib.suppress(BlockingIOError):
                received += len(os.read(read_end, 1 << 20))
            await asyncio.sleep(0)
        output.flush()
        with contextlib.suppress(BlockingIOError):
            received += len(os.read(read_end, 1 << 20))
        assert received == 200_000 * 201  # every line, once
    finally:
        output.close()
        os.close(read_end)
        os.close(write_end)


def test_closing_writes_every_line_still_waiting(tmp_path: Path) -> None:
    output, path, fd = output_to(tmp_path, interval=60)
    output.start()
    for i in range(10):
        output.append(f"line {i}")
    output.close()  # what logging.shutdown does at exit
    os.close(fd)
    assert path.read_text().splitlines() == [f"line {i}" for i in range(10)]
