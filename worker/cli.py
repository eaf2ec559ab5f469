"""The `inboxcheck` command line."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from rich.console import Console

from jobs.request import RequestError, ValidationRequest, parse_request
from jobs.validate import validate_inbox
from worker import (
    enqueue_cmd,
    events,
    events_cmd,
    health_cmd,
    keygen_cmd,
    list_cmd,
    register_cmd,
    schema_cmd,
    unregister_cmd,
    worker_cmd,
)
from worker.client import ClientError, read_source
from worker.logs import configure_logging
from worker.payload import PlaintextRefused
from worker.report import render
from worker.sealing import SecretKeyError
from worker.serialization import ResultError
from worker.settings import Settings, SettingsError, get_settings

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

PASSWORD_ENV = {"smtp_password": "INBOXCHECK_SMTP_PASSWORD", "imap_password": "INBOXCHECK_IMAP_PASSWORD"}


class UsageError(Exception):
    """Bad input from the person or program calling the CLI: exit 2 with this message."""


# The project's own errors: their messages are written for people and never carry a secret.
EXPECTED_ERRORS = (UsageError, RequestError, SettingsError, ClientError, PlaintextRefused,
                   SecretKeyError, ResultError)


def request_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Build a request from flags; passwords come from the environment or a prompt, never argv."""
    fields: dict[str, Any] = {
        name: value
        for name in (
            "inbox_id", "inbox_type", "email", "smtp_host", "smtp_port", "smtp_security",
            "imap_host", "imap_port", "smtp_username", "imap_username", "account_age_days",
        )
        if (value := getattr(args, name)) is not None
    }
    if args.no_smtp_tls:
        fields["smtp_use_tls"] = False
    if args.imap_starttls:
        fields["imap_use_ssl"] = False
    if args.allow_insecure_auth:
        fields["allow_insecure_auth"] = True
    for field, env in PASSWORD_ENV.items():
        if os.environ.get(env):
            fields[field] = os.environ[env]
    if "smtp_password" not in fields:
        if not sys.stdin.isatty():
            raise UsageError(f"smtp_password: set {PASSWORD_ENV['smtp_password']} or run at a terminal to be asked")
        fields["smtp_password"] = getpass.getpass("SMTP password: ")
    return fields


def load_request(args: argparse.Namespace) -> ValidationRequest:
    if args.request is not None:
        return parse_request(read_source(args.request))
    if args.inbox_type is None or args.email is None:
        raise UsageError("give --request FILE, or at least --inbox-type and --email")
    return parse_request(request_from_flags(args))


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    request = load_request(args)
    if args.timeout is not None:
        settings = settings.model_copy(update={"step_timeout": args.timeout})
    if args.ca_file is not None:
        settings = settings.model_copy(update={"tls_ca_file": args.ca_file})
    result = asyncio.run(validate_inbox(request, settings.check_options()))
    if args.json:
        print(events.completed(result).model_dump_json())
    else:
        render(result, Console())
    return EXIT_VALID if result.status == "valid" else EXIT_INVALID


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 300 seconds")
    return value


# Waiting for events of a bulk enqueue can reasonably take hours, not more than a day.
MAX_WAIT_S = 86_400.0


def wait_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= MAX_WAIT_S:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_WAIT_S:g} seconds")
    return value


def existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a readable file")
    return path


def _add_request_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--request", metavar="FILE", help="request JSON file, or - for stdin")
    flags = parser.add_argument_group("request fields (instead of --request)")
    flags.add_argument("--inbox-id")
    flags.add_argument("--inbox-type", choices=["GOOGLE_WORKSPACE", "OUTLOOK_365", "CUSTOM_SMTP"])
    flags.add_argument("--email")
    flags.add_argument("--smtp-host")
    flags.add_argument("--smtp-port", type=int)
    flags.add_argument("--smtp-security", choices=["ssl", "starttls", "none"])
    flags.add_argument("--no-smtp-tls", action="store_true", help="smtp_use_tls false")
    flags.add_argument("--allow-insecure-auth", action="store_true")
    flags.add_argument("--imap-host")
    flags.add_argument("--imap-port", type=int)
    flags.add_argument("--imap-starttls", action="store_true", help="imap_use_ssl false")
    flags.add_argument("--smtp-username")
    flags.add_argument("--imap-username")
    flags.add_argument("--account-age-days", type=int)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inboxcheck",
        description="Prove sender-account credentials over SMTP and IMAP.",
        epilog=f"Passwords given with flags come from {PASSWORD_ENV['smtp_password']} and "
        f"{PASSWORD_ENV['imap_password']}, or a prompt.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    validate = commands.add_parser("validate", help="check one inbox now, in this process")
    _add_request_flags(validate)
    validate.add_argument("--timeout", type=positive_seconds, metavar="SECONDS", help="time limit per step")
    validate.add_argument("--ca-file", type=existing_file, metavar="PEM", help="extra trusted CA certificates")
    validate.add_argument("--json", action="store_true", help="print the result event as JSON")
    validate.set_defaults(handler=cmd_validate)
    worker_cmd.add_parser(commands)
    enqueue_cmd.add_parser(commands, wait_seconds)
    events_cmd.add_parser(commands)
    schema_cmd.add_parser(commands)
    keygen_cmd.add_parser(commands)
    register_cmd.add_parser(commands)
    unregister_cmd.add_parser(commands)
    list_cmd.add_parser(commands)
    health_cmd.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if not getattr(args, "needs_settings", True):
            return args.handler(args, None)
        settings = get_settings()
        # A person reading a one-off report wants the report, not the progress lines.
        quiet = args.command != "worker" and "log_level" not in settings.model_fields_set
        configure_logging(settings.log_format, "WARNING" if quiet else settings.log_level)
        return args.handler(args, settings)
    except EXPECTED_ERRORS as exc:
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
        return 130


if __name__ == "__main__":
    sys.exit(main())
