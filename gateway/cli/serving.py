"""Commands that run the gateway: `serve`, `demo`, `healthcheck`, and `check-config`."""

from __future__ import annotations

import argparse
import http.client
import logging
import ssl
import sys
import urllib.request
from dataclasses import dataclass

from ..app import create_app, create_metrics_app, listening_tls, reload_config
from ..auth.passwords import PasswordHasher
from ..config import GatewayConfig
from ..server import (
    ListenError,
    Site,
    run,
    serve_until_stopped,
    supervise_workers,
    worker_argv,
)
from ..storage import Store, open_store
from ..telemetry.logs import configure_logging
from .config_file import read_config
from .errors import CommandError
from .listening import Listener, cannot_listen, check_can_listen, gateway_listener

__all__ = ["check_config", "demo", "healthcheck", "serve"]

log = logging.getLogger("gateway")
DEMO_USER, DEMO_PASSWORD = "guang", "123456"


def serve(args: argparse.Namespace) -> int:
    """Run the gateway: in this process, or as `--workers N` processes sharing the port."""
    config = read_config(args.config, ephemeral_key_ok=args.demo)
    configure_logging(config.logging.format, args.log_level or config.logging.level)
    workers = args.workers or config.server.workers
    if workers < 1:
        raise CommandError("--workers must be at least 1")
    if workers > 1 and args.worker_index is None:
        return _supervise(args, config, workers)
    _warn_if_ephemeral(config)
    server = config.server
    index = args.worker_index or 0

    listeners = {(server.host, server.port): gateway_listener(args.config, server.port)}
    if config.metrics.enabled and config.metrics.port:
        listeners[(server.host, config.metrics.port + index)] = Listener(
            "the metrics endpoint",
            f"METRICS_PORT (metrics.port in {args.config})",
            f"GATEWAY_HOST (server.host in {args.config})",
            f"METRICS_PORT={config.metrics.port + 100}",
        )

    async def serving() -> int:
        app = create_app(config)
        sites: list[Site] = [(app, server.host, server.port, listening_tls(app))]
        if config.metrics.enabled and config.metrics.port:
            sites.append((create_metrics_app(app), server.host, config.metrics.port + index))

        async def started() -> None:
            scheme = "https" if server.tls.enabled else "http"
            log.info("gateway listening on %s://%s:%d", scheme, server.host, server.port)
            if server.tls.enabled:
                log.info("TLS: certificate %s", server.tls.certificate)

        await serve_until_stopped(
            sites,
            on_started=started,
            on_reload=lambda: reload_config(app, str(args.config)),
            shutdown_timeout=server.shutdown_timeout,
            reuse_port=args.worker_index is not None,
            access_log=config.logging.access_log,
        )
        return 0

    try:
        return run(serving())
    except ListenError as exc:
        raise cannot_listen(exc, listeners) from None


def _supervise(args: argparse.Namespace, config: GatewayConfig, workers: int) -> int:
    if config.tokens.ephemeral:
        raise CommandError(
            "--workers needs a configured signing key: each worker would make its own throwaway "
            "secret and reject the others' tokens"
        )

    server = config.server
    try:
        check_can_listen(server.host, server.port)
    except ListenError as exc:
        listener = gateway_listener(args.config, server.port)
        raise cannot_listen(exc, {(server.host, server.port): listener}) from None

    async def migrate() -> None:
        async with open_store(config.database):  # migrates once, before the workers start
            pass

    run(migrate())
    argv = ["serve", "--config", str(args.config)]
    if args.log_level:
        argv += ["--log-level", args.log_level]
    if not config.rate_limits.redis_url:
        # The workers share no memory: a client whose connections land on both gets each
        # worker's allowance of failed logins and route requests.
        log.warning(
            "%d workers without rate_limits.redis_url: each keeps its own failed-login and "
            "route rate-limit counters, so every limit allows up to %d times what is "
            "configured; set rate_limits.redis_url to share them",
            workers,
            workers,
        )
    log.info("starting %d workers on http://%s:%d", workers, config.server.host, config.server.port)
    return supervise_workers(lambda index: worker_argv(argv, index), workers)


def demo(args: argparse.Namespace) -> int:
    """The demo upstream and the gateway in one process, with the demo user guang."""
    from upstream_demo import create_upstream_app

    config = read_config(args.config, ephemeral_key_ok=True)
    configure_logging("text", args.log_level or config.logging.level)  # a person is reading
    _warn_if_ephemeral(config)
    upstream = config.upstreams.get("demo")
    if upstream is None or upstream.url.host not in ("127.0.0.1", "localhost", "::1"):
        raise CommandError("the demo needs an upstream named 'demo' on localhost in the config")
    server = config.server
    base = f"http://{server.host}:{server.port}"
    upstream_host, upstream_port = upstream.url.host or "127.0.0.1", upstream.url.port or 80
    if upstream_port == server.port:
        raise CommandError(
            f"the demo upstream (UPSTREAM_URL, upstreams.demo.url) and the gateway "
            f"(GATEWAY_PORT, server.port) both want port {server.port}: give one another port"
        )
    upstream_setting = f"UPSTREAM_URL (upstreams.demo.url in {args.config})"
    listeners = {
        (server.host, server.port): gateway_listener(args.config, server.port),
        (upstream_host, upstream_port): Listener(
            "the demo upstream",
            upstream_setting,
            upstream_setting,
            f"UPSTREAM_URL=http://{upstream_host}:{upstream_port + 1}",
        ),
    }

    async def demoing() -> int:
        demo_user = await _ensure_demo_user(config)
        username, password = (
            (DEMO_USER, DEMO_PASSWORD) if demo_user.usable else ("<username>", "<password>")
        )

        async def started() -> None:
            print(
                f"\nDemo upstream on {upstream.url}, gateway on {base}\n"
                f"{demo_user.line}\n"
                f"Open the demo page: {base}/demo\n\n"
                f"  curl {base}/aaa\n"
                f"  curl -i {base}/bbb\n"
                f"  curl -s -X POST {base}/user/login -H 'Content-Type: application/json' \\\n"
                f'       -d \'{{"username":"{username}","password":"{password}"}}\'\n'
                f"  curl {base}/bbb -H 'Authorization: Bearer <access_token>'\n\n"
                "Stop with Ctrl-C.\n",
                flush=True,
            )

        await serve_until_stopped(
            [
                (create_upstream_app(), upstream_host, upstream_port),
                (create_app(config), server.host, server.port),
            ],
            on_started=started,
        )
        return 0

    try:
        return run(demoing())
    except ListenError as exc:
        raise cannot_listen(exc, listeners) from None


@dataclass(frozen=True, slots=True)
class _DemoUser:
    """What the demo found or did about its user: a line for the banner, and whether
    guang / 123456 logs in."""

    line: str
    usable: bool


async def _ensure_demo_user(config: GatewayConfig) -> _DemoUser:
    async with open_store(config.database, create=True) as store:
        hasher = PasswordHasher(config.passwords)
        await hasher.start()
        try:
            return await _demo_user(store, hasher)
        finally:
            await hasher.close()


async def _demo_user(store: Store, hasher: PasswordHasher) -> _DemoUser:
    existing = await store.get_user_by_name(DEMO_USER)
    if existing is not None:
        if not await hasher.verify(existing.password_hash, DEMO_PASSWORD):
            return _DemoUser(
                f"Demo user: {DEMO_USER} exists with a password other than {DEMO_PASSWORD} "
                f"(left as it is; `gateway user passwd {DEMO_USER}` sets one)",
                usable=False,
            )
        if existing.disabled:
            return _DemoUser(
                f"Demo user: {DEMO_USER} / {DEMO_PASSWORD} exists but is disabled "
                f"(`gateway user enable {DEMO_USER}`)",
                usable=False,
            )
        return _DemoUser(
            f"Demo user: {DEMO_USER} / {DEMO_PASSWORD} (already in the database)", usable=True
        )
    # Never plant a known password in a database that holds real users.
    if await store.list_users():
        log.warning("not creating the demo user guang: the database already has users")
        return _DemoUser(
            f"No demo user: {DEMO_USER} / {DEMO_PASSWORD} was not created because the database "
            "has other users (`gateway user list`); log in as one of them",
            usable=False,
        )
    await store.add_user(DEMO_USER, await hasher.hash(DEMO_PASSWORD))
    log.info("created the demo user guang")
    return _DemoUser(f"Demo user: {DEMO_USER} / {DEMO_PASSWORD} (created now)", usable=True)


def _warn_if_ephemeral(config: GatewayConfig) -> None:
    if config.tokens.ephemeral:
        log.warning(
            "DEMO MODE: no JWT_SECRET set, signing with a random secret that lives only as long as "
            "this process; every token dies on restart. Set JWT_SECRET for real use."
        )


def healthcheck(args: argparse.Namespace) -> int:
    """For container HEALTHCHECKs: no curl in a slim image, and the port comes from config."""
    # It issues no tokens, so it does not need the signing secret.
    server = read_config(args.config, ephemeral_key_ok=True).server
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host  # noqa: S104
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    url = (
        f"https://{host}:{server.port}/healthz"
        if server.tls.enabled
        else f"http://{host}:{server.port}/healthz"
    )
    context = None
    if server.tls.enabled:
        # Is this process answering: its certificate is for its clients' names, not for the
        # loopback address asked here, so it is not checked.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        # (S310: an http or https URL to our own port, built above.)
        with urllib.request.urlopen(url, timeout=3, context=context) as response:  # noqa: S310
            healthy = response.status == 200
    except http.client.HTTPException as exc:
        print(f"unhealthy: {url}: not an HTTP answer: {str(exc).strip():.80}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        # OSError: refused, timed out, an error status; ValueError: a host that makes no URL.
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    print("healthy" if healthy else f"unhealthy: {url}")
    return 0 if healthy else 1


def check_config(args: argparse.Namespace) -> int:
    """Validate the config file as `serve` would read it."""
    config = read_config(args.config)
    print(
        f"{config.source}: OK ({len(config.routes)} routes, {len(config.upstreams)} upstreams, "
        f"{config.tokens.key.algorithm} tokens)"
    )
    return 0
