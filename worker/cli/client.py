"""Shared bits of the client commands: a Redis connection with a clear error, exit codes."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError

from jobs.errors import InboxcheckError
from worker.messages import events
from worker.runtime import local_redis, redis_target
from worker.settings import Settings

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
# No event within --wait: the job is still queued or running. Not a verdict on the inbox.
EXIT_PENDING = 3
CONNECT_TIMEOUT_S = 5.0


class ClientError(InboxcheckError):
    """A problem to report in one line and exit 2 (bad input, Redis unreachable)."""


class CredentialsRefused(ClientError):
    """Redis answered and refused the user or password of INBOXCHECK_REDIS_URL."""


def read_source(source: str, flag: str = "--request") -> str:
    """The text of a file, or of stdin for "-" (a BOM, as spreadsheets write, is dropped)."""
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientError(f"{flag}: cannot read {source}: {getattr(exc, 'strerror', None) or exc}") from None


def where(url: str) -> str:
    """Where a Redis URL points (host:port, or the sentinels and master), without its password."""
    return redis_target.where(url)


@asynccontextmanager
async def connect(settings: Settings) -> AsyncIterator[Redis]:
    # A development Redis the worker started is password-protected; its password is in its folder.
    url = local_redis.with_local_password(settings.redis_url, settings.local_redis_dir)
    client = redis_target.client(settings, url, socket_connect_timeout=CONNECT_TIMEOUT_S)
    try:
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            if redis_target.refused_credentials(exc):
                raise CredentialsRefused(
                    f"{redis_target.credentials_refused_text(settings.redis_url)}; "
                    "check its user name and password"
                ) from None
            raise ClientError(
                f"cannot reach Redis at {where(settings.redis_url)} "
                "(INBOXCHECK_REDIS_URL); is the worker's Redis running?"
            ) from None
        yield client
    finally:
        await client.aclose()


def exit_code(event: events.TerminalEvent) -> int:
    """As for `inboxcheck validate`: 0 valid, 1 invalid (or failed), 2 rejected request."""
    if isinstance(event, events.RejectedEvent):
        return EXIT_USAGE
    return EXIT_VALID if event.data.status == "valid" else EXIT_INVALID


def outcome(event: events.TerminalEvent) -> str:
    """A short label to group events by: valid, or the error code (and reason)."""
    data = event.data
    if data.status == "valid":
        return "valid"
    label = data.error_code or data.status
    return f"{label} / {data.reason}" if data.reason else str(label)
