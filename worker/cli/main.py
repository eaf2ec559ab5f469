"""The `inboxcheck` command line: parses, sets up logging, dispatches, maps errors to exit codes.

Each command lives in its own module of worker.cli, with an `add_parser` and a handler.
"""

from __future__ import annotations

import argparse
import sys

from redis.exceptions import RedisError

from jobs.errors import InboxcheckError
from jobs.tls import use_small_tls_read_buffers
from worker.cli import (
    enqueue,
    events,
    keygen,
    list_inboxes,
    liveness,
    register,
    schema,
    unregister,
    validate,
    webhook,
    webhooks,
    worker,
)
from worker.cli.validate import PASSWORD_ENV
from worker.logs import configure_logging
from worker.settings import get_settings

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# In the order `inboxcheck --help` lists them.
COMMANDS = (
    validate,
    worker,
    enqueue,
    events,
    schema,
    keygen,
    register,
    unregister,
    list_inboxes,
    liveness,
    webhooks,
    webhook,
)
# Long-running processes log at INFO; one-off commands only say what went wrong.
PROCESSES = ("worker", "webhooks")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inboxcheck",
        description="Prove sender-account credentials over SMTP and IMAP.",
        epilog=f"Passwords given with flags come from {PASSWORD_ENV['smtp_password']} and "
        f"{PASSWORD_ENV['imap_password']}, or a prompt; never from the command line.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_small_tls_read_buffers()  # this process's own asyncio: see jobs.tls
    try:
        if not getattr(args, "needs_settings", True):
            return args.handler(args, None)
        settings = get_settings()
        # A person reading a one-off report wants the report, not the progress lines.
        quiet = args.command not in PROCESSES and "log_level" not in settings.model_fields_set
        configure_logging(settings.log_format, "WARNING" if quiet else settings.log_level)
        return args.handler(args, settings)
    except InboxcheckError as exc:
        # Written for people and never carrying a secret (jobs.errors): printed as it is.
        print(f"inboxcheck: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        # Anything else (a pydantic ValidationError among them) may carry input values in its
        # text, passwords included: name the type only, and no traceback (which would print it).
        print(f"inboxcheck: unexpected {type(exc).__name__}", file=sys.stderr)
        return EXIT_USAGE
    except RedisError as exc:
        print(f"inboxcheck: Redis failed: {type(exc).__name__}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
