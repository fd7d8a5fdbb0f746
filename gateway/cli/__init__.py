"""The `gateway` command: serve, demo, check-config, db, user and session administration.

`parser` builds the command line, `serving` runs the gateway, `admin` holds the database, user
and session commands; `main` runs one and turns its failure into a line on stderr.
"""

from __future__ import annotations

import logging
import os
import sys

from ..errors import ConfigError, GatewayError
from ..telemetry.logs import configure_logging
from .errors import CommandError
from .parser import build_parser

__all__ = ["main"]

log = logging.getLogger("gateway")


def main(argv: list[str] | None = None) -> None:
    """Run the `gateway` command line and exit with its status."""
    args = build_parser().parse_args(argv)
    # Plain text until a command that serves has read its config's logging section.
    configure_logging("text", args.log_level or "info")
    try:
        code = args.handler(args)
        if sys.stdout is not None:
            sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
    except ConfigError as exc:
        print("configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        code = 2
    except (CommandError, GatewayError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        if sys.stderr is not None and sys.stderr.isatty():
            print(file=sys.stderr)  # the shell's prompt on a line of its own, not after ours
        code = 130
    except BrokenPipeError:
        # `gateway user list | head -1`: the reader has all it wanted. Point stdout at
        # /dev/null so the interpreter's last flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    except Exception as exc:
        # Never a traceback on the terminal; it is in the log at debug level.
        log.debug("unexpected failure", exc_info=True)
        print(
            f"error: unexpected {type(exc).__name__}: {exc} "
            "(a bug: please report it; --log-level debug shows where)",
            file=sys.stderr,
        )
        code = 1
    sys.exit(code)
