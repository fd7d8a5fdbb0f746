"""Commands that run the gateway: `serve`, `demo`, `healthcheck`, and `check-config`."""

from __future__ import annotations

import argparse
import logging
import sys
import urllib.request

from ..app import create_app, create_metrics_app, reload_config
from ..auth.passwords import PasswordHasher
from ..config import GatewayConfig, load_config
from ..server import run, serve_until_stopped, supervise_workers, worker_argv
from ..storage import open_store
from ..telemetry.logs import configure_logging
from .errors import CommandError

__all__ = ["check_config", "demo", "healthcheck", "serve"]

log = logging.getLogger("gateway")


def serve(args: argparse.Namespace) -> int:
    """Run the gateway: in this process, or as `--workers N` processes sharing the port."""
    config = load_config(args.config, ephemeral_key_ok=args.demo)
    configure_logging(config.logging.format, args.log_level or config.logging.level)
    workers = args.workers or config.server.workers
    if workers < 1:
        raise CommandError("--workers must be at least 1")
    if workers > 1 and args.worker_index is None:
        return _supervise(args, config, workers)
    _warn_if_ephemeral(config)
    server = config.server
    index = args.worker_index or 0

    async def serving() -> int:
        app = create_app(config)
        sites = [(app, server.host, server.port)]
        if config.metrics.enabled and config.metrics.port:
            sites.append((create_metrics_app(app), server.host, config.metrics.port + index))

        async def started() -> None:
            log.info("gateway listening on http://%s:%d", server.host, server.port)

        await serve_until_stopped(
            sites,
            on_started=started,
            on_reload=lambda: reload_config(app, str(args.config)),
            shutdown_timeout=server.shutdown_timeout,
            reuse_port=args.worker_index is not None,
        )
        return 0

    return run(serving())


def _supervise(args: argparse.Namespace, config: GatewayConfig, workers: int) -> int:
    if config.tokens.ephemeral:
        raise CommandError(
            "--workers needs a configured signing key: each worker would make its own throwaway "
            "secret and reject the others' tokens"
        )

    async def migrate() -> None:
        async with open_store(config.database):  # migrates once, before the workers start
            pass

    run(migrate())
    argv = ["serve", "--config", str(args.config)]
    if args.log_level:
        argv += ["--log-level", args.log_level]
    log.info("starting %d workers on http://%s:%d", workers, config.server.host, config.server.port)
    return supervise_workers(lambda index: worker_argv(argv, index), workers)


def demo(args: argparse.Namespace) -> int:
    """The demo upstream and the gateway in one process, with the demo user guang."""
    from upstream_demo import create_upstream_app

    config = load_config(args.config, ephemeral_key_ok=True)
    configure_logging("text", args.log_level or config.logging.level)  # a person is reading
    _warn_if_ephemeral(config)
    upstream = config.upstreams.get("demo")
    if upstream is None or upstream.url.host not in ("127.0.0.1", "localhost", "::1"):
        raise CommandError("the demo needs an upstream named 'demo' on localhost in the config")
    server = config.server
    base = f"http://{server.host}:{server.port}"

    async def demoing() -> int:
        await _ensure_demo_user(config)

        async def started() -> None:
            print(
                f"\nDemo upstream on {upstream.url}, gateway on {base}\n"
                f"Demo user: guang / 123456\n"
                f"Open the demo page: {base}/demo\n\n"
                f"  curl {base}/aaa\n"
                f"  curl -i {base}/bbb\n"
                f"  curl -s -X POST {base}/user/login -H 'Content-Type: application/json' \\\n"
                f'       -d \'{{"username":"guang","password":"123456"}}\'\n'
                f"  curl {base}/bbb -H 'Authorization: Bearer <access_token>'\n\n"
                "Stop with Ctrl-C.\n",
                flush=True,
            )

        await serve_until_stopped(
            [
                (create_upstream_app(), upstream.url.host or "127.0.0.1", upstream.url.port or 80),
                (create_app(config), server.host, server.port),
            ],
            on_started=started,
        )
        return 0

    return run(demoing())


async def _ensure_demo_user(config: GatewayConfig) -> None:
    async with open_store(config.database, create=True) as store:
        if await store.get_user_by_name("guang") is not None:
            return
        # Never plant a known password in a database that holds real users.
        if await store.list_users():
            log.warning("not creating the demo user guang: the database already has users")
            return
        hasher = PasswordHasher(config.passwords)
        await hasher.start()
        try:
            await store.add_user("guang", await hasher.hash("123456"))
        finally:
            await hasher.close()
        log.info("created the demo user guang")


def _warn_if_ephemeral(config: GatewayConfig) -> None:
    if config.tokens.ephemeral:
        log.warning(
            "DEMO MODE: no JWT_SECRET set, signing with a random secret that lives only as long as "
            "this process; every token dies on restart. Set JWT_SECRET for real use."
        )


def healthcheck(args: argparse.Namespace) -> int:
    """For container HEALTHCHECKs: no curl in a slim image, and the port comes from config."""
    # It issues no tokens, so it does not need the signing secret.
    server = load_config(args.config, ephemeral_key_ok=True).server
    host = "127.0.0.1" if server.host in ("0.0.0.0", "::", "") else server.host  # noqa: S104
    url = f"http://{host}:{server.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            healthy = response.status == 200
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    print("healthy" if healthy else f"unhealthy: {url}")
    return 0 if healthy else 1


def check_config(args: argparse.Namespace) -> int:
    """Validate the config file as `serve` would read it."""
    config = load_config(args.config)
    print(
        f"{config.source}: OK ({len(config.routes)} routes, {len(config.upstreams)} upstreams, "
        f"{config.tokens.key.algorithm} tokens)"
    )
    return 0
