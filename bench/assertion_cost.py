"""What the identity assertion header adds to a proxied request, in microseconds.

    .venv/bin/python bench/assertion_cost.py [--rounds 7] [--requests 20000]

The same request head is built by the header policy for the same route with and without
`assertion: true` (an ES256 key, a verified identity, the assertion cache warm as it is for a
user's second request onwards), in alternating rounds; the difference of the medians is the
per-request cost. Also shows what a cache miss costs (one ES256 signature), paid once per
access token and upstream every 48 s. bench/compare.py runs this after its rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from aiohttp.test_utils import make_mocked_request
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway import parse_config
from gateway.auth.assertions import AssertionSigner
from gateway.auth.tokens import TokenService
from gateway.config import RouteConfig
from gateway.proxy.headers import HeaderPolicy

TARGET_MICROSECONDS = 10.0


def measure(rounds: int, requests: int) -> tuple[float, float, float]:
    """(median µs per head without, with the assertion, µs per uncached signature)."""
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "signing.pem"
        key.write_bytes(
            ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        config = parse_config(
            {
                "database": {"url": f"sqlite:///{tmp}/gw.db"},
                "tokens": {"private_key_file": str(key)},
                "upstreams": {"demo": {"url": "http://127.0.0.1:9"}},
                "routes": [{"path": "/bbb", "upstream": "demo", "auth": "required"}],
            },
            environ={},
        )
    tokens = TokenService(config.tokens)
    token, _ = tokens.access_token(
        user_id=1, username="guang", session_id="a" * 32, not_after=time.time() + 3600
    )
    identity = tokens.verify_access(token)
    signer = AssertionSigner(config)
    policy = HeaderPolicy(
        config.identity_headers,
        (),
        request_id_header=config.server.request_id_header,
        gateway_owns_cors=False,
        assertion_header=config.assertion.header,
        assertions=signer,
    )
    plain = config.routes[0]
    signed = dataclasses.replace(plain, assertion=True)
    request = make_mocked_request(
        "GET",
        "/bbb",
        headers={
            "Host": "gw",
            "Authorization": f"Bearer {token}",
            "User-Agent": "wrk",
            "Accept": "*/*",
        },
    )

    def per_head(route: RouteConfig) -> float:
        line = b"GET /bbb HTTP/1.1\r\n"
        started = time.perf_counter()
        for _ in range(requests):
            policy.upstream_head(request, route, identity, "r" * 32, request_line=line, host="up")
        return (time.perf_counter() - started) / requests * 1e6

    per_head(signed)  # warm: the cache holds the assertion, the verdicts are learned
    without, with_ = [], []
    for _ in range(rounds):
        without.append(per_head(plain))
        with_.append(per_head(signed))
    started = time.perf_counter()
    misses = 500
    for _ in range(misses):
        AssertionSigner(config).assertion(identity, "demo")
    sign = (time.perf_counter() - started) / misses * 1e6
    return statistics.median(without), statistics.median(with_), sign


def report(rounds: int = 7, requests: int = 20000) -> str:
    without, with_, sign = measure(rounds, requests)
    added = with_ - without
    verdict = "met" if added <= TARGET_MICROSECONDS else "MISSED"
    return (
        f"assertion header: +{added:.2f} µs per request ({without:.2f} -> {with_:.2f} µs to build "
        f"the upstream request head; target <= {TARGET_MICROSECONDS:g} µs: {verdict}); "
        f"a cache miss (one ES256 signature) {sign:.0f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    print(report(args.rounds, args.requests))


if __name__ == "__main__":
    main()
