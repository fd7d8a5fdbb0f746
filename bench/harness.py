"""What the benchmark scripts share: free ports, waiting for a listener, reading a process tree's
CPU time, memory and open files from /proc, and running the bench's own aiohttp servers the way the
gateway runs (uvloop when installed, no access log)."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

from aiohttp import web

__all__ = [
    "REPO",
    "cpu_seconds",
    "free_port",
    "listening_processes",
    "open_fds",
    "peak_rss_mib",
    "process_tree",
    "rss_mib",
    "serve_app",
    "wait_for",
]

REPO = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(port: int, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listened on {port} within {timeout:g}s")


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process and its descendants."""
    total = 0.0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return total


def _status_mib(pid: int, field: str) -> float:
    total = 0.0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        match = re.search(rf"{field}:\s+(\d+) kB", status)
        total += int(match.group(1)) / 1024 if match else 0.0
    return total


def peak_rss_mib(pid: int) -> float:
    """The process tree's peak resident memory (VmHWM, summed)."""
    return _status_mib(pid, "VmHWM")


def rss_mib(pid: int) -> float:
    """The process tree's resident memory now (VmRSS, summed)."""
    return _status_mib(pid, "VmRSS")


def open_fds(pid: int, *, but_clients_of: int | None = None) -> int:
    """pid's open file descriptors; with `but_clients_of`, not counting the established
    connections accepted on that port (how many a client holds open follows its own pool and
    latency). One the gateway failed to close after its client did (CLOSE_WAIT) still counts."""
    links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    if but_clients_of is None:
        return len(links)
    accepted = _tcp_inodes(but_clients_of, listening=False)
    return sum(1 for link in links if link[8:-1] not in accepted)


def _tcp_inodes(port: int, *, listening: bool) -> set[str]:
    """Socket inodes with local port `port` (IPv4 or IPv6): the listening ones, or the
    established connections accepted on it."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN, 01 ESTABLISHED; field 9 is
            # the inode.
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == (
                "0A" if listening else "01"
            ):
                inodes.add(fields[9])
    return inodes


def serve_app(app: web.Application, port: int) -> None:
    """Run app on 127.0.0.1:port until SIGTERM: uvloop when installed (as the gateway does), no
    access log (a reference row measures serving, not logging)."""
    loop = None
    try:
        import uvloop
    except ImportError:
        pass
    else:
        loop = uvloop.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)


def listening_processes(pid: int, port: int) -> set[int]:
    """Members of pid's process tree holding a socket that listens on port (IPv4 or IPv6)."""
    inodes = _tcp_inodes(port, listening=True)
    holders: set[int] = set()
    for member in process_tree(pid):
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{member}/fd").iterdir()]
        except OSError:
            continue
        if any(link[8:-1] in inodes for link in links if link.startswith("socket:[")):
            holders.add(member)
    return holders
