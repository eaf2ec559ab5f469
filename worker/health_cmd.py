"""`inboxcheck health`: exit 0 while a worker is alive on the queue, 1 when none is.

Reads arq's own health-check key (what `arq --check` reads): each live worker rewrites it every
INBOXCHECK_HEALTH_CHECK_INTERVAL seconds with a one-second margin of expiry, so it vanishes
soon after the last worker stops or hangs. The key is per queue, so this says whether the fleet
on that queue is alive, which is what a probe that restarts a stuck deployment needs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from worker import keys
from worker.client import CONNECT_TIMEOUT_S, EXIT_INVALID, EXIT_VALID, where
from worker.settings import Settings


async def alive(settings: Settings) -> str | None:
    """arq's health line (jobs complete/failed/retried/ongoing/queued) or None."""
    redis: Redis = Redis.from_url(settings.redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                  socket_timeout=CONNECT_TIMEOUT_S)
    try:
        value = await redis.get(keys.health_check_key(settings.queue_name))
    finally:
        await redis.aclose()
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def run(_args: argparse.Namespace, settings: Settings) -> int:
    try:
        line = asyncio.run(alive(settings))
    except (RedisError, OSError):
        print(f"inboxcheck: unhealthy: cannot reach Redis at {where(settings.redis_url)}", file=sys.stderr)
        return EXIT_INVALID
    if line is None:
        print(f"inboxcheck: unhealthy: no live worker on queue {settings.queue_name}", file=sys.stderr)
        return EXIT_INVALID
    print(f"healthy: {line}")
    return EXIT_VALID


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("health", help="exit 0 when a worker is alive on the queue, else 1")
    parser.set_defaults(handler=run)
