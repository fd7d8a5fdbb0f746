"""python -m upstream_demo --host H --port P [--name NAME] [--delay SECONDS]"""

from __future__ import annotations

import argparse

from aiohttp import web

from .app import create_upstream_app


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
    args = parser.parse_args()
    web.run_app(
        create_upstream_app(name=args.name, delay=args.delay),
        host=args.host,
        port=args.port,
        print=lambda _: print(
            f"upstream_demo listening on http://{args.host}:{args.port}", flush=True
        ),
    )


if __name__ == "__main__":
    main()
