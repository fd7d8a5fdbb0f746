"""Real ingresses in front of a gateway: Debian's nginx and caddy, started on free ports with the
shipped configs from deploy/forward-auth/ (only their addresses replaced), each in a directory of
its own, stopped by the PID they were started with."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import create_app
from gateway.appkeys import PASSWORDS, STORE
from upstream_demo import create_upstream_app

from .gateways import make_config
from .processes import REPO, free_port
from .services import IN_CI

DEPLOY = REPO / "deploy" / "forward-auth"
# The addresses the shipped configs name, replaced by the test's.
SHIPPED_GATEWAY, SHIPPED_APP = "127.0.0.1:8080", "127.0.0.1:3000"


@dataclass
class Behind:
    """A gateway (with the user guang / 123456) and the real demo upstream, on free ports, for
    an ingress to put in front; `seen` is every raw path that reached the upstream."""

    gateway: web.Application
    gateway_address: str
    app_address: str
    seen: list[str] = field(default_factory=list)


async def gateway_and_upstream(
    aiohttp_server: Any, database_url: str, routes: list[dict[str, Any]], **sections: Any
) -> Behind:
    """Start both; the gateway trusts the ingress on 127.0.0.1 (server.trusted_proxies)."""
    seen: list[str] = []
    upstream_app = create_upstream_app()

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        seen.append(request.raw_path)

    upstream_app.on_response_prepare.append(record)
    upstream: TestServer = await aiohttp_server(upstream_app)
    config = make_config(
        database_url=database_url,
        upstream_url=str(upstream.make_url("/")),
        routes=routes,
        server={"trusted_proxies": ["127.0.0.1"]},
        **sections,
    )
    app = create_app(config)
    gateway: TestServer = await aiohttp_server(app)
    await app[STORE].add_user("guang", await app[PASSWORDS].hash("123456"))
    return Behind(app, f"127.0.0.1:{gateway.port}", f"127.0.0.1:{upstream.port}", seen)


def require(program: str) -> str:
    """The program's path; skip (fail under CI=true) without it."""
    found = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin")
    if found is None:
        if IN_CI:
            raise RuntimeError(f"CI needs Debian's {program}")
        pytest.skip(f"needs Debian's {program} (apt-get install {program})")
    return found


def _addresses(text: str, gateway: str, app: str) -> str:
    return text.replace(SHIPPED_GATEWAY, gateway).replace(SHIPPED_APP, app)


@contextmanager
def nginx(
    directory: Path, *, gateway: str, app: str, decision_cache: bool = False
) -> Iterator[str]:
    """nginx with deploy/forward-auth/nginx.conf (its "#cache " lines uncommented with
    `decision_cache`); yields its base URL."""
    program = require("nginx")
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    site = _addresses((DEPLOY / "nginx.conf").read_text(), gateway, app)
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    if decision_cache:
        site = re.sub(r"^(\s*)#cache ", r"\1", site, flags=re.M)
        site = site.replace("/var/cache/nginx/gateway-decisions", str(directory / "decisions"))
    (directory / "site.conf").write_text(site)
    # Started as root, nginx's workers would run as nobody, who cannot enter pytest's 0700
    # directories (the decision cache, temp files).
    user = "user root;\n" if os.geteuid() == 0 else ""
    (directory / "nginx.conf").write_text(
        f"""{user}daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    include {directory}/site.conf;
}}
"""
    )
    args = [program, "-p", str(directory), "-c", str(directory / "nginx.conf")]
    args += ["-e", str(directory / "error.log")]
    with _running("nginx", args, directory, port):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def caddy(directory: Path, *, gateway: str, app: str) -> Iterator[str]:
    """caddy with deploy/forward-auth/Caddyfile (no admin endpoint, no HTTPS); yields its URL."""
    program = require("caddy")
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    site = _addresses((DEPLOY / "Caddyfile").read_text(), gateway, app)
    site = site.replace("app.example {", f"http://127.0.0.1:{port} {{")
    # Other tests' caddies run too: no admin port, no certificates, its own storage.
    global_options = f"{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {directory}\n}}\n"
    (directory / "Caddyfile").write_text(global_options + site)
    args = [program, "run", "--config", str(directory / "Caddyfile"), "--adapter", "caddyfile"]
    with _running("caddy", args, directory, port):
        yield f"http://127.0.0.1:{port}"


@contextmanager
def _running(name: str, args: list[str], directory: Path, port: int) -> Iterator[None]:
    env = {**os.environ, "HOME": str(directory), "XDG_DATA_HOME": str(directory)}
    env["XDG_CONFIG_HOME"] = str(directory)
    with (directory / f"{name}.out").open("wb") as out:
        proc = subprocess.Popen(args, cwd=directory, env=env, stdout=out, stderr=out)
    try:
        _wait(proc, port, directory / f"{name}.out")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait(proc: subprocess.Popen[bytes], port: int, output: Path) -> None:
    from .processes import wait_for_port

    try:
        wait_for_port(port, proc, timeout=20)
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{output.read_text()}") from None
