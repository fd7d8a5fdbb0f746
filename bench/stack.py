"""The processes the comparison measures, each started the first time a row needs it.

The gateway always runs as a user gets it: `gateway serve --config` on a copy of the repo's
config.yaml, configured only through the environment variables that file reads (JWT_SECRET,
GATEWAY_PORT, UPSTREAM_URL, DATABASE_URL), so its JSON access log is on (stderr, to a file in the
work directory). Every other variable the file reads is removed from the inherited environment,
so a developer's shell cannot change what "shipped" means. The login rate limits stay: only one of
the three is an environment variable, and the bench's logins all succeed, so none is reached.
The pool row's gateway reads the same file with its one line `url: ${UPSTREAM_URL...}` replaced
by `targets: ${UPSTREAM_TARGETS}` (three URLs, comma-separated); all else stays as shipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt
import pymysql
from budget import CpuBudget
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from harness import REPO, free_port, listening_processes, wait_for
from load import PASSWORD, PROXYING_USERNAME, USERNAME, login

__all__ = ["Service", "Stack"]

BENCH = Path(__file__).resolve().parent
SHIPPED_CONFIG = REPO / "config.yaml"
SHIPPED_NGINX_FORWARD_AUTH = REPO / "deploy" / "forward-auth" / "nginx.conf"
MYSQL_DATABASE = "gw_bench_compare"
# Access tokens live 30 minutes as shipped; log in again well before that in long runs.
TOKEN_RENEWAL = 10 * 60.0


@dataclass(frozen=True)
class Service:
    """One started server: its process (whose tree is measured) and its base URL."""

    name: str
    proc: subprocess.Popen[bytes]
    base: str

    @property
    def pid(self) -> int:
        return self.proc.pid


def _mysql_reachable() -> bool:
    try:
        pymysql.connect(host="127.0.0.1", port=3306, user="root", connect_timeout=2).close()
    except pymysql.err.MySQLError:
        return False
    return True


class Stack:
    """Everything the selected rows need, started once and stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.secret = secrets.token_urlsafe(48)
        self.mysql = _mysql_reachable()
        self.database_url = (
            f"mysql://root@127.0.0.1:3306/{MYSQL_DATABASE}"
            if self.mysql
            else f"sqlite:///{workdir / 'gateway.db'}"
        )
        self._procs: list[subprocess.Popen[bytes]] = []
        self._services: dict[str, Service] = {}
        self._users_ready = False
        self._token: tuple[float, str] | None = None
        self._pool_targets: list[str] = []
        self._budgets: list[CpuBudget] = []

    @property
    def database_name(self) -> str:
        return "MariaDB" if self.mysql else "SQLite"

    def stop(self) -> None:
        for proc in reversed(self._procs):
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for budget in self._budgets:
            budget.remove()

    # --- starting processes ---------------------------------------------------------------

    def _once(self, name: str, start: Callable[[], Service]) -> Service:
        if name not in self._services:
            print(f"starting {name}", file=sys.stderr)
            self._services[name] = start()
        return self._services[name]

    def _start(
        self, name: str, argv: list[str], port: int, env: dict[str, str] | None = None
    ) -> Service:
        with (self.workdir / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                argv, cwd=self.workdir, env=env or dict(os.environ), stdout=log, stderr=log
            )
        self._procs.append(proc)
        wait_for(port)
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}: see {name}.log")
        return Service(name, proc, f"http://127.0.0.1:{port}")

    def _nginx(self, name: str, server: str, http_extra: str = "") -> Service:
        port = free_port()
        conf = self.workdir / f"{name}.conf"
        conf.write_text(
            f"daemon off; worker_processes 1; pid {self.workdir}/{name}.pid;\n"
            f"error_log {self.workdir}/{name}.err warn;\n"
            "events { worker_connections 4096; }\n"
            "http { access_log off; keepalive_requests 1000000;\n"
            f"  client_body_temp_path {self.workdir}; proxy_temp_path {self.workdir};\n"
            f"  {http_extra}\n"
            f"  server {{ listen 127.0.0.1:{port}; {server} }} }}\n"
        )
        return self._start(name, ["nginx", "-c", str(conf), "-p", str(self.workdir)], port)

    def fast_upstream(self) -> Service:
        """nginx answering a fixed 200: an upstream that is never the bottleneck."""
        return self._once(
            "fast-upstream",
            lambda: self._nginx("fast-upstream", 'location / { return 200 "bbb"; }'),
        )

    def fast_upstream_pool(self) -> tuple[Service, list[str]]:
        """nginx answering a fixed 200 on three ports: the three targets of a pool, none of
        which is the bottleneck (one worker, as for the single fast upstream)."""
        ports = [free_port() for _ in range(2)]
        listens = "".join(f"listen 127.0.0.1:{port}; " for port in ports)
        service = self._once(
            "fast-upstream-pool",
            lambda: self._nginx("fast-upstream-pool", listens + 'location / { return 200 "bbb"; }'),
        )
        if not self._pool_targets:
            self._pool_targets = [service.base, *(f"http://127.0.0.1:{p}" for p in ports)]
        return service, self._pool_targets

    def demo_upstream(self) -> Service:
        """The demo upstream (Python): a realistic pairing."""

        def start() -> Service:
            port = free_port()
            argv = [sys.executable, "-m", "upstream_demo", "--port", str(port)]
            return self._start("demo-upstream", argv, port)

        return self._once("demo-upstream", start)

    def nginx_proxy(self) -> Service:
        """nginx as a plain proxy (one worker, keep-alive pool) in front of the fast upstream."""

        def start() -> Service:
            fast = self.fast_upstream().base.removeprefix("http://")
            server = (
                "location / { proxy_pass http://fast; proxy_http_version 1.1; "
                'proxy_set_header Connection ""; }'
            )
            pool = f"upstream fast {{ server {fast}; keepalive 64; }}"
            return self._nginx("nginx-proxy", server, pool)

        return self._once("nginx-proxy", start)

    def haproxy(self) -> Service:
        """HAProxy verifying the HS256 JWT itself (signature, alg, exp), one thread."""
        return self._once("haproxy", self._start_haproxy)

    def _start_haproxy(self) -> Service:
        port = free_port()
        fast = self.fast_upstream().base.removeprefix("http://")
        verify = f'var(txn.bearer),jwt_verify(txn.alg,"{self.secret}")'
        conf = self.workdir / "haproxy.cfg"
        conf.write_text(f"""global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend gateway
    bind 127.0.0.1:{port}
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
    http-request deny status 401 unless {{ var(txn.alg) -m str HS256 }}
    http-request deny status 401 unless {{ {verify} -m int 1 }}
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
    http-request set-var(txn.now) date
    http-request deny status 401 if {{ var(txn.exp),sub(txn.now) -m int lt 0 }}
    default_backend upstream
backend upstream
    http-reuse always
    server fast {fast}
""")
        return self._start("haproxy", ["haproxy", "-f", str(conf), "-db"], port)

    def bare_server(self) -> Service:
        """bench/bare_server.py: aiohttp answering a fixed 200."""

        def start() -> Service:
            port = free_port()
            argv = [sys.executable, str(BENCH / "bare_server.py"), "--port", str(port)]
            return self._start("bare-aiohttp", argv, port)

        return self._once("bare-aiohttp", start)

    def naive_proxy(self) -> Service:
        """bench/naive_proxy.py in front of the fast upstream, verifying what the gateway issues."""

        def start() -> Service:
            # The issuer and audience the shipped config resolves to, read off a real token.
            claims = jwt.decode(self.access_token(), options={"verify_signature": False})
            port = free_port()
            argv = [
                sys.executable,
                str(BENCH / "naive_proxy.py"),
                "--port",
                str(port),
                "--upstream",
                self.fast_upstream().base,
                "--issuer",
                str(claims["iss"]),
                "--audience",
                str(claims["aud"]),
            ]
            env = {**os.environ, "JWT_SECRET": self.secret}
            return self._start("naive-proxy", argv, port, env)

        return self._once("naive-proxy", start)

    def nginx_forward_auth(self, decision_cache: int = 0) -> Service:
        """nginx (one worker) with deploy/forward-auth/nginx.conf as shipped, its addresses set:
        auth_request to a gateway that only decides, then proxying to the fast upstream. With
        `decision_cache`, its "#cache " lines uncommented and the gateway offering N seconds."""
        name = "nginx-forward-auth" + (f"-cache{decision_cache}" if decision_cache else "")

        def start() -> Service:
            gateway = self.forward_auth_gateway(decision_cache).base.removeprefix("http://")
            fast = self.fast_upstream().base.removeprefix("http://")
            port = free_port()
            site = SHIPPED_NGINX_FORWARD_AUTH.read_text()
            site = site.replace("127.0.0.1:8080", gateway).replace("127.0.0.1:3000", fast)
            site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
            if decision_cache:
                site = re.sub(r"^(\s*)#cache ", r"\1", site, flags=re.M)
                cache = self.workdir / f"{name}-decisions"
                site = site.replace("/var/cache/nginx/gateway-decisions", str(cache))
            (self.workdir / f"{name}-site.conf").write_text(site)
            conf = self.workdir / f"{name}.conf"
            # As root, workers would run as nobody, who cannot enter the 0700 work directory.
            user = "user root; " if os.geteuid() == 0 else ""
            conf.write_text(
                f"{user}daemon off; worker_processes 1; pid {self.workdir}/{name}.pid;\n"
                f"error_log {self.workdir}/{name}.err warn;\n"
                "events { worker_connections 4096; }\n"
                "http { access_log off; keepalive_requests 1000000;\n"
                f"  client_body_temp_path {self.workdir}; proxy_temp_path {self.workdir};\n"
                f"  include {self.workdir}/{name}-site.conf; }}\n"
            )
            argv = ["nginx", "-c", str(conf), "-p", str(self.workdir)]
            return self._start(name, argv, port)

        return self._once(name, start)

    def forward_auth_gateway(self, decision_cache: int = 0) -> Service:
        """The shipped gateway, trusting nginx on 127.0.0.1 (TRUSTED_PROXIES): it answers
        /_gateway/auth for nginx_forward_auth and proxies nothing (DECISION_CACHE_MAX_AGE)."""
        extra = {"TRUSTED_PROXIES": "127.0.0.1"}
        if decision_cache:
            extra["DECISION_CACHE_MAX_AGE"] = str(decision_cache)
        instance = "forward-auth" + (f"-cache{decision_cache}" if decision_cache else "")
        return self.gateway(instance=instance, env=extra)

    # --- the gateway, as shipped ----------------------------------------------------------

    def gateway(
        self,
        upstream: str = "fast",
        workers: int = 1,
        instance: str = "",
        env: dict[str, str] | None = None,
        budget: float | None = None,
    ) -> Service:
        """`gateway serve` on the shipped config, UPSTREAM_URL at the fast or the demo upstream
        (and more of the config's variables in `env`); one process (tree) per distinct set of
        arguments (name `instance` apart when `env` differs). With `budget`, the tree may use
        that many cores' time per worker (bench/budget.py)."""
        name = "-".join(
            [
                "gateway",
                upstream,
                *([f"workers{workers}"] if workers != 1 else []),
                *([f"budget{budget:g}"] if budget else []),
                instance,
            ]
        ).rstrip("-")

        def start() -> Service:
            service = self._start_gateway(name, upstream, workers, env or {})
            if budget:
                # A cgroup per worker; the supervisor (idle) shares the first one's.
                port = int(service.base.rsplit(":", 1)[1])
                listeners = sorted(listening_processes(service.pid, port))
                for index, worker in enumerate(listeners):
                    capped = CpuBudget(f"{name}-{index}", budget)
                    self._budgets.append(capped)
                    capped.hold(worker)
                    if index == 0 and service.pid not in listeners:
                        capped.hold(service.pid)
            return service

        return self._once(name, start)

    def _start_gateway(
        self, name: str, upstream: str, workers: int, extra: dict[str, str]
    ) -> Service:
        self._ensure_user()
        port = free_port()
        if upstream == "pool":
            _, targets = self.fast_upstream_pool()
            argv = self._gateway_argv("serve", config=self._pool_config())
            env = self._shipped_env(port, targets[0]) | {"UPSTREAM_TARGETS": ",".join(targets)}
        else:
            target = self.demo_upstream() if upstream == "demo" else self.fast_upstream()
            argv = self._gateway_argv("serve")
            env = self._shipped_env(port, target.base)
        if workers != 1:
            argv += ["--workers", str(workers)]
        env |= extra
        service = self._start(name, argv, port, env)
        # With SO_REUSEPORT the kernel spreads connections over the sockets listening when they
        # arrive: wrk connects once, so every worker must be listening before any row starts.
        deadline = time.monotonic() + 30
        while len(listening_processes(service.pid, port)) < workers:
            if time.monotonic() > deadline or service.proc.poll() is not None:
                raise SystemExit(f"{name}: {workers} workers did not listen; see {name}.log")
            time.sleep(0.1)
        return service

    def tls_gateway(self) -> Service:
        """The protected row's gateway with TLS on (TLS_CERT_FILE / TLS_KEY_FILE, a self-signed
        P-256 certificate made here), reached over https://."""
        cert, key = self.workdir / "tls-cert.pem", self.workdir / "tls-key.pem"
        if not cert.exists():
            _self_signed(cert, key)
        plain = self.gateway(
            instance="tls", env={"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key)}
        )
        return dataclasses.replace(plain, base=plain.base.replace("http://", "https://", 1))

    def _config_copy(self) -> Path:
        path = self.workdir / "config.yaml"
        if not path.exists():
            shutil.copy(SHIPPED_CONFIG, path)
        return path

    def _pool_config(self) -> Path:
        """The shipped config with its upstream as a pool: `targets` instead of `url`."""
        path = self.workdir / "config-pool.yaml"
        shipped = SHIPPED_CONFIG.read_text()
        pooled = re.sub(
            r"(?m)^(\s+)url: \$\{UPSTREAM_URL[^}]*\}$", r"\1targets: ${UPSTREAM_TARGETS}", shipped
        )
        if pooled == shipped:
            raise SystemExit("config.yaml has no `url: ${UPSTREAM_URL...}` line to make a pool of")
        path.write_text(pooled)
        return path

    def _gateway_argv(self, *command: str, config: Path | None = None) -> list[str]:
        config = config or self._config_copy()
        return [sys.executable, "-m", "gateway", *command, "--config", str(config)]

    def _shipped_env(self, port: int, upstream_url: str) -> dict[str, str]:
        read_by_config = set(re.findall(r"\$\{(\w+)", SHIPPED_CONFIG.read_text()))
        env = {k: v for k, v in os.environ.items() if k not in read_by_config}
        return env | {
            "JWT_SECRET": self.secret,
            "GATEWAY_PORT": str(port),
            "UPSTREAM_URL": upstream_url,
            "DATABASE_URL": self.database_url,
        }

    def _ensure_user(self) -> None:
        """A fresh database with the bench users, made the way the README's quick start does."""
        if self._users_ready:
            return
        if self.mysql:
            conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
            with conn.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {MYSQL_DATABASE}")
            conn.close()
        env = self._shipped_env(free_port(), "http://127.0.0.1:1")
        for command, stdin in (
            (["db", "init"], b""),
            (["user", "add", USERNAME, "--password-stdin"], f"{PASSWORD}\n".encode()),
            (["user", "add", PROXYING_USERNAME, "--password-stdin"], f"{PASSWORD}\n".encode()),
        ):
            result = subprocess.run(
                self._gateway_argv(*command),
                cwd=self.workdir,
                env=env,
                input=stdin,
                capture_output=True,
                check=False,
            )
            if result.returncode != 0:
                raise SystemExit(f"gateway {' '.join(command)} failed:\n{result.stderr.decode()}")
        self._users_ready = True

    def login_gateway(self) -> Service:
        """A gateway (shipped config, fast upstream) for the rows that log in and refresh."""
        return self.gateway(instance="logins")

    def access_token(self) -> str:
        """A valid access token, renewed before it can expire. Logged in at the login gateway, so
        the proxying gateways never hash a password (tokens are valid at every gateway: one
        secret, one database)."""
        if self._token is None or time.monotonic() - self._token[0] > TOKEN_RENEWAL:
            base = self.login_gateway().base

            async def fetch() -> str:
                async with aiohttp.ClientSession() as http:
                    return (await login(http, base, PROXYING_USERNAME))["access_token"]

            self._token = (time.monotonic(), asyncio.run(fetch()))
        return self._token[1]

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token()}"}


def _self_signed(cert: Path, key: Path) -> None:
    """A self-signed certificate for 127.0.0.1 (wrk does not check it)."""
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
