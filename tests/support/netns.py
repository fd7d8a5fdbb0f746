"""Separate network hosts on one machine: Linux network namespaces wired to a private bridge.

Each host is a namespace with its own loopback and one veth into a bridge in the root namespace,
which holds the subnet's .1, so the test process itself can reach every host. Names carry this
process's pid and a random tag; a run that died without cleaning up is swept by the next one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Host", "VirtualNetwork", "netns_problem"]

_PREFIX = "gwmh"
_IP = shutil.which("ip") or "/usr/sbin/ip"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_IP, *args], capture_output=True, text=True, check=check, timeout=30)


def netns_problem() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"{_PREFIX}-probe-{secrets.token_hex(4)}"
    result = _ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"`ip netns add` is not permitted here: {result.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass(frozen=True)
class Host:
    """One namespace: a name for the test, its namespace, its address on the bridge."""

    name: str
    namespace: str
    address: str


@dataclass
class VirtualNetwork:
    """A random private /24 on a bridge; hosts join it with `add_host`; `close` removes it all."""

    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bridge = f"{_PREFIX}b{self.tag}"
        self.subnet = _unused_subnet()
        self.gateway_address = str(self.subnet.network_address + 1)  # the root namespace's

    def open(self) -> VirtualNetwork:
        sweep_stale()
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway_address}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        return self

    def add_host(self, name: str, octet: int) -> Host:
        namespace = f"{_PREFIX}-{os.getpid()}-{self.tag}-{name}"
        outside, inside = f"{_PREFIX}v{self.tag}{octet}", f"{_PREFIX}p{self.tag}{octet}"
        address = str(self.subnet.network_address + octet)
        _ip("netns", "add", namespace)
        host = Host(name, namespace, address)
        self.hosts[name] = host  # from here on, close() removes it
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", namespace)
        _ip("link", "set", outside, "master", self.bridge, "up")
        _ip("-n", namespace, "link", "set", inside, "name", "eth0")
        _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", namespace, "route", "add", "default", "via", self.gateway_address)
        return host

    def start(
        self,
        host: Host,
        argv: list[str],
        *,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Run argv inside the host. `ip netns exec` execs it, so the pid is the program's."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [_IP, "netns", "exec", host.namespace, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
            )
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for host in self.hosts.values():
            _remove_namespace(host.namespace)
        _ip("link", "del", self.bridge, check=False)


def _unused_subnet() -> ipaddress.IPv4Network:
    taken = [
        ipaddress.ip_network(found, strict=False)
        for found in re.findall(r"inet (\d+\.\d+\.\d+\.\d+/\d+)", _ip("-o", "addr").stdout)
    ]
    taken += [
        ipaddress.ip_network(found)
        for found in re.findall(r"^(\d+\.\d+\.\d+\.\d+/\d+)", _ip("route").stdout, re.M)
    ]
    for _ in range(100):
        candidate = ipaddress.IPv4Network(
            f"10.{random.randint(200, 254)}.{random.randint(0, 255)}.0/24"
        )
        if not any(candidate.overlaps(other) for other in taken):
            return candidate
    raise RuntimeError("no free 10.x.y.0/24 for the test network")


def _remove_namespace(namespace: str) -> None:
    pids = _ip("netns", "pids", namespace, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        pids = _ip("netns", "pids", namespace, check=False).stdout.split()
        time.sleep(0.05)
    _ip("netns", "del", namespace, check=False)


def sweep_stale() -> None:
    """Remove namespaces and bridges left by test runs whose process no longer exists."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        found = re.match(rf"({_PREFIX}-(\d+)-([0-9a-f]+)-\S+)", line)
        if found is None:
            continue
        namespace, pid, tag = found.group(1), int(found.group(2)), found.group(3)
        try:
            os.kill(pid, 0)
            continue  # its run is still going
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        _remove_namespace(namespace)
        _ip("link", "del", f"{_PREFIX}b{tag}", check=False)
