"""Upstreams that refuse, hang, dawdle, reset mid-body, speak broken HTTP or send huge headers:
each gives a clean 502/504 (or a cleanly cut stream), other upstreams are unaffected, and the
gateway's memory and open file descriptors return to their baseline."""

from __future__ import annotations

import os
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.gateways import TEST_SECRET, route
from tests.support.processes import Processes, free_port, start_gateway_process, wait_for_port
from tests.support.wire import raw_get


class FaultyUpstream(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class FaultyHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return
            data += chunk
        path = data.split(b" ", 2)[1].decode()
        if path.startswith("/fault/hang"):
            sock.settimeout(30)
            try:
                while sock.recv(1024):
                    pass
            except OSError:
                pass
        elif path.startswith("/fault/slow"):
            time.sleep(3)
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
        elif path.startswith("/fault/reset"):
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            time.sleep(0.1)
            # SO_LINGER 0: close with a TCP reset instead of a clean end.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif path.startswith("/fault/malformed"):
            sock.sendall(b"HTTP/1.1 two hundred\r\n\x00garbage\r\n\r\n")
        elif path.startswith("/fault/huge-headers"):
            sock.sendall(b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * 200_000 + b"\r\n\r\n")
        else:
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.fixture
def faulty() -> Iterator[int]:
    server = FaultyUpstream(("127.0.0.1", 0), FaultyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def raw_exchange(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
    return data


EXPECTED = {
    "/fault/hang": (504, "Upstream 'faulty' did not answer within 1s"),
    "/fault/slow": (504, "Upstream 'faulty' did not answer within 1s"),
    "/fault/malformed": (502, "Upstream 'faulty' failed to answer"),
    "/fault/huge-headers": (502, "Upstream 'faulty' failed to answer"),
    "/dead/x": (502, "Upstream 'dead' is unreachable"),
}


def test_upstream_faults(tmp_path: Path, processes: Processes, faulty: int) -> None:
    port, healthy_port = free_port(), free_port()
    healthy = processes.start(
        "upstream", ["-m", "upstream_demo", "--port", str(healthy_port)], tmp_path, dict(os.environ)
    )
    wait_for_port(healthy_port, healthy)
    config: dict[str, Any] = {
        "server": {"port": port},
        "database": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "tokens": {"secret": TEST_SECRET},
        "upstreams": {
            "faulty": {"url": f"http://127.0.0.1:{faulty}", "timeout": "1s"},
            "dead": {"url": f"http://127.0.0.1:{free_port()}"},
            "demo": {"url": f"http://127.0.0.1:{healthy_port}"},
        },
        "routes": [
            {"path": "/fault/**", "upstream": "faulty", "auth": "public"},
            {"path": "/dead/**", "upstream": "dead", "auth": "public"},
            route("/aaa", "public"),
        ],
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    gateway, base = start_gateway_process(
        processes, tmp_path, {**os.environ, "GATEWAY_PORT": str(port)}
    )
    time.sleep(0.5)
    for _ in range(20):
        assert raw_get(f"{base}/aaa")[0] == 200
        assert raw_get(f"{base}/fault/ok")[0] == 200
    baseline_fds, baseline_rss = fds(gateway.pid), rss_mib(gateway.pid)

    for _ in range(5):
        for path, (status, message) in EXPECTED.items():
            got_status, _, body = raw_get(f"{base}{path}")
            assert (got_status, body) == (
                status,
                f'{{"statusCode": {status}, "message": "{message}", "error": '
                f'"{"Gateway Timeout" if status == 504 else "Bad Gateway"}"}}'.encode(),
            ), path
            assert raw_get(f"{base}/aaa")[:3:2] == (200, b"aaa")  # others unaffected
        # A reset mid-body: the status was already sent, so the stream is cut short.
        cut = raw_exchange(port, "/fault/reset")
        head, _, body = cut.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 100000" in head
        assert 0 < len(body) < 100000

    # Faults happening together, next to healthy traffic.
    results: dict[str, int] = {}

    def fetch(path: str) -> None:
        results[path] = raw_get(f"{base}{path}")[0]

    threads = [threading.Thread(target=fetch, args=(p,)) for p in [*EXPECTED, "/aaa"]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert results == {**{p: s for p, (s, _) in EXPECTED.items()}, "/aaa": 200}

    time.sleep(1.5)  # let closed connections finish closing
    after_fds, after_rss = fds(gateway.pid), rss_mib(gateway.pid)
    print(
        f"gateway fds {baseline_fds} -> {after_fds}, RSS {baseline_rss:.1f} -> {after_rss:.1f} MiB"
    )
    assert after_fds <= baseline_fds + 4, (baseline_fds, after_fds)
    assert after_rss <= baseline_rss + 16, (baseline_rss, after_rss)
    assert "Traceback" not in processes.output(gateway)
