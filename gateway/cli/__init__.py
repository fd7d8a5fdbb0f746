"""The `gateway` command: serve, demo, check-config, db, user and session administration.

`parser` builds the command line, `serving` runs the gateway, `admin` holds the database, user
and session commands; `main` runs one and turns its failure into a line on stderr.
"""

from __future__ import annotations

import sys

from ..errors import ConfigError, GatewayError
from ..telemetry.logs import configure_logging
from .errors import CommandError
from .parser import build_parser

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """Run the `gateway` command line and exit with its status."""
    args = build_parser().parse_args(argv)
    # Plain text until a command that serves has read its config's logging section.
    configure_logging("text", args.log_level or "info")
    try:
        code = args.handler(args)
    except ConfigError as exc:
        print("configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        code = 2
    except (CommandError, GatewayError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
