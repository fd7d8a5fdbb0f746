"""The reloadable part of the gateway: route table and upstream pools for one config.

On SIGHUP a new Runtime is built from the re-read config and swapped in: new requests use it at
once; requests already running finish on the old one, whose upstream pools are closed when the
last of them is done (or after the drain timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from ..auth.assertions import AssertionSigner
from ..auth.cookies import cookie_names
from ..config import GatewayConfig, changes_needing_restart, load_config
from ..errors import ConfigError
from ..telemetry.metrics import GatewayMetrics
from .headers import HeaderPolicy
from .routes import RouteTable
from .upstream import Proxy

__all__ = ["Runtime", "RuntimeHolder"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Runtime:
    config: GatewayConfig
    routes: RouteTable
    proxy: Proxy
    in_flight: int = 0
    retired: bool = False
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def build(
        cls,
        config: GatewayConfig,
        metrics: GatewayMetrics,
        assertions: AssertionSigner | None = None,
    ) -> Runtime:
        headers = HeaderPolicy(
            config.identity_headers,
            config.server.trusted_proxies,
            request_id_header=config.server.request_id_header,
            gateway_owns_cors=config.cors.enabled,
            # Stripped with cookie sessions off too: browsers keep sending the cookies of an
            # earlier run for days, and an upstream must never see a refresh token.
            gateway_cookies=cookie_names(config.browser),
            assertion_header=config.assertion.header,
            assertions=assertions,
        )
        return cls(
            config=config,
            routes=RouteTable(config.routes, case_sensitive=config.server.case_sensitive_paths),
            proxy=Proxy(
                config.upstreams,
                headers,
                metrics,
                client_body_timeout=config.server.client_body_timeout,
            ),
        )


class RuntimeHolder:
    """Holds the current Runtime and counts the requests using each one."""

    def __init__(
        self,
        runtime: Runtime,
        metrics: GatewayMetrics,
        assertions: AssertionSigner | None = None,
    ) -> None:
        self.current = runtime
        self._metrics = metrics
        # App-scoped (its key and header are read at start-up): kept across reloads.
        self._assertions = assertions

    def acquire(self) -> Runtime:
        """The current runtime, held until `release` (a plain pair, not a context manager:
        this runs on every request)."""
        runtime = self.current
        runtime.in_flight += 1
        return runtime

    @staticmethod
    def hold(runtime: Runtime) -> bool:
        """Hold `runtime`, read from `current` earlier, unless a reload has retired it since
        (False: nothing is held)."""
        if runtime.retired:
            return False
        runtime.in_flight += 1
        return True

    @staticmethod
    def release(runtime: Runtime) -> None:
        runtime.in_flight -= 1
        if runtime.retired and runtime.in_flight == 0:
            runtime.drained.set()

    async def reload(self, path: str, *, drain_timeout: float) -> bool:
        """Re-read the config file and swap in its routes and upstreams; keep the old ones
        (and say why) when the file is invalid."""
        old = self.current
        try:
            config = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            log.error(
                "config reload refused, keeping the running config: %s", "; ".join(exc.problems)
            )
            return False
        # Which sections a reload applies is marked in the config model (routes, upstreams).
        for section in changes_needing_restart(old.config, config):
            log.warning("config reload: '%s' changed; restart the gateway to apply it", section)
        new = Runtime.build(config, self._metrics, self._assertions)
        await new.proxy.start()
        self.current = new
        log.info(
            "config reloaded: %d routes, %d upstreams", len(config.routes), len(config.upstreams)
        )
        await self._retire(old, drain_timeout)
        return True

    async def close(self) -> None:
        await self.current.proxy.close()

    async def _retire(self, old: Runtime, drain_timeout: float) -> None:
        old.retired = True
        if old.in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(old.drained.wait(), drain_timeout)
        await old.proxy.close()
