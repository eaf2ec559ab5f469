"""`inboxcheck validate --auth oauth2`: the request's oauth2 object from flags, its secrets from the
environment or a prompt (never argv, which other users of the machine can read), and what becomes
of a refresh token the provider rotated."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from jobs.oauth2_request import MAX_SERVICE_ACCOUNT_KEY_CHARS, Grant
from worker.cli.client import ClientError

ACCESS_TOKEN_ENV = "INBOXCHECK_OAUTH2_ACCESS_TOKEN"
REFRESH_TOKEN_ENV = "INBOXCHECK_OAUTH2_REFRESH_TOKEN"
CLIENT_SECRET_ENV = "INBOXCHECK_OAUTH2_CLIENT_SECRET"
# Only its owner may read a file holding a refresh token.
PRIVATE_FILE_MODE = 0o600


def secret(field: str, env: str, prompt: str, *, optional: bool = False) -> str | None:
    """A secret from the environment, else asked for at a terminal (never from the command line).
    `optional`: an empty answer, or no terminal, means none."""
    if os.environ.get(env):
        return os.environ[env]
    if not sys.stdin.isatty():
        if optional:
            return None
        raise ClientError(f"{field}: set {env} or run at a terminal to be asked")
    return getpass.getpass(prompt) or None


def _grant(args: argparse.Namespace) -> Grant | None:
    if args.oauth2_grant is not None:
        return Grant(args.oauth2_grant)
    if args.oauth2_service_account_key is not None:
        return Grant.SERVICE_ACCOUNT
    if args.oauth2_client_id is not None or os.environ.get(REFRESH_TOKEN_ENV):
        return Grant.REFRESH_TOKEN
    return None  # a ready access token


def _read_key(path: Path) -> str:
    try:
        with path.open(encoding="utf-8") as file:
            text = file.read(MAX_SERVICE_ACCOUNT_KEY_CHARS + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientError(f"--oauth2-service-account-key: cannot read {path}: {type(exc).__name__}") from None
    if len(text) > MAX_SERVICE_ACCOUNT_KEY_CHARS:
        raise ClientError(
            f"--oauth2-service-account-key: {path} is longer than a key file "
            f"({MAX_SERVICE_ACCOUNT_KEY_CHARS} characters)"
        )
    return text


def oauth2_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The request's oauth2 object."""
    grant = _grant(args)
    if grant is None:
        return {"access_token": secret("oauth2.access_token", ACCESS_TOKEN_ENV, "OAuth2 access token: ")}
    fields: dict[str, Any] = {
        name: value
        for name, value in (
            ("grant", args.oauth2_grant),
            ("client_id", args.oauth2_client_id),
            ("token_url", args.oauth2_token_url),
            ("tenant", args.oauth2_tenant),
            ("scopes", args.oauth2_scopes.split() if args.oauth2_scopes else None),
        )
        if value is not None
    }
    if grant is Grant.SERVICE_ACCOUNT:
        if args.oauth2_service_account_key is None:
            raise ClientError("--oauth2-service-account-key: is required with grant service_account")
        fields["service_account_key"] = _read_key(args.oauth2_service_account_key)
        return fields
    if grant is Grant.REFRESH_TOKEN:
        fields["refresh_token"] = secret("oauth2.refresh_token", REFRESH_TOKEN_ENV, "OAuth2 refresh token: ")
    client_secret = secret(
        "oauth2.client_secret",
        CLIENT_SECRET_ENV,
        "OAuth2 client secret (empty for a public client): "
        if grant is Grant.REFRESH_TOKEN
        else "OAuth2 client secret: ",
        optional=grant is Grant.REFRESH_TOKEN,
    )
    if client_secret is not None:
        fields["client_secret"] = client_secret
    return fields


def check_save_path(path: Path | None) -> None:
    """Refuse a --save-refresh-token FILE that cannot be written before the check runs: after it,
    the provider may have rotated the refresh token, and the new one would be lost."""
    if path is None:
        return
    target = path if path.exists() else path.parent
    if path.is_dir() or not os.access(target, os.W_OK):
        raise ClientError(f"--save-refresh-token: cannot write {path}")


def save_rotated(rotated: str | None, path: Path | None) -> None:
    """A refresh token the provider issued in place of the one given: written to `path` (readable
    by its owner only), or a warning that it was not kept. Never printed."""
    if rotated is None:
        return
    if path is None:
        print(
            "note: the provider issued a new refresh token and the one given may stop working; it was not "
            "kept (use --save-refresh-token FILE)",
            file=sys.stderr,
        )
        return
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    os.fchmod(descriptor, PRIVATE_FILE_MODE)  # a file that already existed keeps its mode otherwise
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(rotated + "\n")
    print(f"the new refresh token is in {path}", file=sys.stderr)


def add_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "OAuth2 (with --auth oauth2)",
        f"Secrets come from {ACCESS_TOKEN_ENV}, {REFRESH_TOKEN_ENV} and {CLIENT_SECRET_ENV}, or a "
        "prompt at a terminal; never from the command line. Without a client id or grant, the access "
        "token is used as it is.",
    )
    group.add_argument("--oauth2-client-id", metavar="ID")
    group.add_argument("--oauth2-grant", choices=[g.value for g in Grant])
    group.add_argument("--oauth2-token-url", metavar="URL", help="defaults from the provider")
    group.add_argument("--oauth2-tenant", metavar="TENANT", help="Microsoft: the tenant id or domain")
    group.add_argument(
        "--oauth2-scopes", metavar="'SCOPE ...'", help="space-separated; defaults per provider"
    )
    group.add_argument(
        "--oauth2-service-account-key",
        type=Path,
        metavar="FILE",
        help="a Google service account's JSON key file",
    )
    group.add_argument(
        "--save-refresh-token",
        type=Path,
        metavar="FILE",
        help="where to write a refresh token the provider rotates (mode 600)",
    )
