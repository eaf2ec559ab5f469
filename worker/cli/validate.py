"""`inboxcheck validate`: check one inbox now, in this process, no Redis needed."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any

from rich.console import Console

from jobs.destinations import ALLOW_ALL
from jobs.goodbyes import Goodbyes
from jobs.pins import parse_pin, parse_pins
from jobs.request import ValidationRequest, parse_request
from jobs.result import ValidationResult
from jobs.token_step import DirectTokens
from jobs.validate import validate_inbox
from worker.cli.client import EXIT_INVALID, EXIT_VALID, ClientError, read_source
from worker.cli.oauth2_flags import add_flags, check_save_path, oauth2_from_flags, save_rotated, secret
from worker.cli.report import render
from worker.logs import install_safe_exception_handler
from worker.messages import events
from worker.settings import Settings

MAX_STEP_TIMEOUT_S = 300.0

PASSWORD_ENV = {"smtp_password": "INBOXCHECK_SMTP_PASSWORD", "imap_password": "INBOXCHECK_IMAP_PASSWORD"}


def request_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Build a request from flags; passwords come from the environment or a prompt, never argv."""
    fields: dict[str, Any] = {
        name: value
        for name in (
            "inbox_id",
            "inbox_type",
            "email",
            "smtp_host",
            "smtp_port",
            "smtp_security",
            "imap_host",
            "imap_port",
            "smtp_username",
            "imap_username",
            "account_age_days",
        )
        if (value := getattr(args, name)) is not None
    }
    if args.no_smtp_tls:
        fields["smtp_use_tls"] = False
    if args.imap_starttls:
        fields["imap_use_ssl"] = False
    if args.allow_insecure_auth:
        fields["allow_insecure_auth"] = True
    if args.auth == "oauth2":
        fields["auth"] = "oauth2"
        fields["oauth2"] = oauth2_from_flags(args)
        return fields
    for field, env in PASSWORD_ENV.items():
        if os.environ.get(env):
            fields[field] = os.environ[env]
    if "smtp_password" not in fields:
        fields["smtp_password"] = secret("smtp_password", PASSWORD_ENV["smtp_password"], "SMTP password: ")
    return fields


def load_request(args: argparse.Namespace) -> ValidationRequest:
    if args.request is not None:
        return parse_request(read_source(args.request))
    if args.inbox_type is None or args.email is None:
        raise ClientError("give --request FILE, or at least --inbox-type and --email")
    return parse_request(request_from_flags(args))


async def _validate(
    request: ValidationRequest, settings: Settings, public_only: bool, tokens: DirectTokens
) -> ValidationResult:
    install_safe_exception_handler()
    options = settings.check_options()
    if not public_only:
        # A person checking a server from their own machine reaches only what they can reach
        # anyway, and their own server is often on loopback or the office network. The worker's
        # refusal protects a platform's network from the people who send it requests.
        options = dataclasses.replace(options, destinations=ALLOW_ALL)
    goodbyes = Goodbyes()
    try:
        return await validate_inbox(request, options, tokens, goodbyes)
    finally:
        # QUIT and LOGOUT are answered (or cut off at their bound) before the process exits,
        # rather than torn down with the event loop.
        await goodbyes.closed()


def run(args: argparse.Namespace, settings: Settings) -> int:
    request = load_request(args)
    if args.timeout is not None:
        settings = settings.model_copy(update={"step_timeout": args.timeout})
    if args.ca_file is not None:
        settings = settings.model_copy(update={"tls_ca_file": args.ca_file})
    if args.resolve:
        # Added to INBOXCHECK_RESOLVE's; a HOST:PORT given here replaces its addresses there.
        settings = settings.model_copy(update={"resolve": {**settings.resolve, **parse_pins(args.resolve)}})
    check_save_path(args.save_refresh_token)
    tokens = DirectTokens()
    try:
        result = asyncio.run(_validate(request, settings, args.public_only, tokens))
    finally:
        # A Ctrl-C after the refresh must not lose the rotated token: it may be the only copy.
        save_rotated(tokens.rotated_refresh_token, args.save_refresh_token)
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
    if not 0 < value <= MAX_STEP_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_STEP_TIMEOUT_S:g} seconds")
    return value


def pin(text: str) -> str:
    try:
        parse_pin(text)
        return text
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    flags.add_argument(
        "--auth",
        choices=["password", "oauth2"],
        default="password",
        help="oauth2: sign in with a bearer token, given or fetched (see the OAuth2 flags)",
    )
    add_flags(parser)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("validate", help="check one inbox now, in this process")
    _add_request_flags(parser)
    parser.add_argument("--timeout", type=positive_seconds, metavar="SECONDS", help="time limit per step")
    parser.add_argument("--ca-file", type=existing_file, metavar="PEM", help="extra trusted CA certificates")
    parser.add_argument(
        "--resolve",
        type=pin,
        action="append",
        default=[],
        metavar="HOST:PORT:ADDRESS",
        help="connect to ADDRESS for HOST:PORT (repeatable, as curl's); TLS still verifies HOST "
        "and HOST still names the provider",
    )
    parser.add_argument("--json", action="store_true", help="print the result event as JSON")
    parser.add_argument(
        "--public-only",
        action="store_true",
        help="refuse private, loopback, link-local and metadata addresses as the worker does "
        "(INBOXCHECK_ALLOW_NETWORKS still allows), to see what the worker would answer",
    )
    parser.set_defaults(handler=run)
