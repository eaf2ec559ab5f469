"""`inboxcheck health`: exit 0 while a worker on this host is alive, 1 when none is.

`--liveness` asks only whether this host's worker loop runs, from its heartbeat file
(worker.runtime.heartbeat), without Redis: what a liveness probe should ask, since a worker riding
out a Redis outage must not be restarted for it. `--liveness --process webhooks` asks the same of
the webhooks process (`inboxcheck webhooks`).

By default (a readiness probe) it reads the liveness keys of this host's worker processes
(keys.worker_alive_key, hostname = the pod's name in Kubernetes, the container's in compose): each
worker rewrites its own key with arq's health record every INBOXCHECK_HEALTH_CHECK_INTERVAL seconds
and lets it expire after three intervals, so a worker that lost Redis or hung is not ready.
`--any` asks the fleet-wide question instead: arq's per-queue health key (what `arq --check`
reads), alive while any worker on the queue is.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from worker.cli import client
from worker.cli.client import EXIT_INVALID, EXIT_USAGE, EXIT_VALID, ClientError, CredentialsRefused, where
from worker.messages import keys
from worker.runtime import heartbeat
from worker.settings import Settings

SCAN_COUNT = 100


def _text(value: Any) -> str | None:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


async def this_host_alive(redis: Redis, queue_name: str, hostname: str) -> str | None:
    """The liveness key of a worker process on `hostname` serving the queue, or None."""
    async for key in redis.scan_iter(match=keys.worker_alive_pattern(hostname), count=SCAN_COUNT):
        if _text(await redis.get(key)) == queue_name:
            return _text(key)
    return None


async def alive(settings: Settings, *, any_worker: bool = False, hostname: str | None = None) -> str | None:
    """What shows the worker alive (arq's health line, or the live worker's key), or None."""
    async with client.connect(settings) as redis:
        if any_worker:
            return _text(await redis.get(keys.health_check_key(settings.queue_name)))
        return await this_host_alive(redis, settings.queue_name, hostname or socket.gethostname())


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.process != "worker" and not args.liveness:
        print("inboxcheck: --process: only with --liveness (readiness is the worker's)", file=sys.stderr)
        return EXIT_USAGE
    if args.liveness:
        path = heartbeat.heartbeat_path(settings, args.process)
        age = heartbeat.age_s(path)
        if age is None or not heartbeat.is_fresh(age, settings):
            seen = "no heartbeat yet" if age is None else f"last heartbeat {age:.0f} s ago"
            print(f"inboxcheck: not alive: {seen} ({path})", file=sys.stderr)
            return EXIT_INVALID
        print(f"alive: heartbeat {age:.1f} s ago")
        return EXIT_VALID
    any_worker = bool(getattr(args, "any", False))
    try:
        line = asyncio.run(alive(settings, any_worker=any_worker))
    except CredentialsRefused as exc:
        print(f"inboxcheck: unhealthy: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (ClientError, RedisError, OSError):
        print(f"inboxcheck: unhealthy: cannot reach Redis at {where(settings.redis_url)}", file=sys.stderr)
        return EXIT_INVALID
    if line is None:
        where_ = "" if any_worker else f" on host {socket.gethostname()}"
        print(
            f"inboxcheck: unhealthy: no live worker{where_} on queue {settings.queue_name}", file=sys.stderr
        )
        return EXIT_INVALID
    print(f"healthy: {line}")
    return EXIT_VALID


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("health", help="exit 0 when a worker on this host is alive, else 1")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--any", action="store_true", help="any worker on the queue, on any host (the fleet), not this host's"
    )
    scope.add_argument(
        "--liveness",
        action="store_true",
        help="only whether this host's worker loop runs (its heartbeat file), without Redis",
    )
    parser.add_argument(
        "--process",
        choices=heartbeat.PROCESSES,
        default="worker",
        help="with --liveness: whose heartbeat, the worker's (default) or `inboxcheck webhooks`'",
    )
    parser.set_defaults(handler=run)
