"""python -m upstream_demo --host H --port P [--name NAME] [--delay SECONDS]"""

from __future__ import annotations

import argparse

from aiohttp import web

from .app import create_upstream_app
from .assertion import AssertionVerifier


def main() -> None:
    parser = argparse.ArgumentParser(prog="upstream_demo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument(
        "--name", default="", help="sent back as X-Served-By, to tell instances apart"
    )
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds to hold every answer back"
    )
    parser.add_argument(
        "--jwks-url", help="check X-Gateway-Assertion against this JWKS (shown by /whoami)"
    )
    parser.add_argument("--audience", default="demo", help="this upstream's name at the gateway")
    parser.add_argument("--issuer", default="auth-gateway", help="the gateway's tokens.issuer")
    args = parser.parse_args()
    verifier = (
        AssertionVerifier(args.jwks_url, audience=args.audience, issuer=args.issuer)
        if args.jwks_url
        else None
    )
    web.run_app(
        create_upstream_app(name=args.name, delay=args.delay, verifier=verifier),
        host=args.host,
        port=args.port,
        print=lambda _: print(
            f"upstream_demo listening on http://{args.host}:{args.port}", flush=True
        ),
    )


if __name__ == "__main__":
    main()
