"""`inboxcheck events`: print the result events from the stream, one JSON per line.

With --group, reads as a consumer group (XREADGROUP) and acknowledges (XACK) each event once it
is printed, so a consumer that restarts first gets what it had read but not acknowledged, then
resumes where the group stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from worker.cli import client
from worker.messages.stream import FIELD_EVENT
from worker.settings import Settings

# Entries fetched per read; and how long one blocking read waits before looking again.
BATCH = 100
BLOCK_MS = 1000
# A new group starts at the beginning of what the stream still holds.
GROUP_START_ID = "0"


def _print(fields: dict[bytes, bytes]) -> None:
    event = fields.get(FIELD_EVENT.encode())
    if event is not None:
        sys.stdout.write(event.decode() + "\n")
        sys.stdout.flush()


async def _plain(redis: Redis, stream: str, follow: bool) -> None:
    last = "0"
    while True:
        reply = await redis.xread({stream: last}, count=BATCH, block=BLOCK_MS if follow else None)
        entries = reply[0][1] if reply else []
        for entry_id, fields in entries:
            _print(fields)
            last = entry_id
        if not entries and not follow:
            return


async def _ensure_group(redis: Redis, stream: str, group: str) -> None:
    try:
        await redis.xgroup_create(stream, group, id=GROUP_START_ID, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def _group(redis: Redis, stream: str, group: str, consumer: str, follow: bool) -> None:
    await _ensure_group(redis, stream, group)
    # "0": this consumer's pending (read, never acknowledged) entries first; then ">": new ones.
    cursor = "0"
    while True:
        block = BLOCK_MS if follow and cursor == ">" else None
        reply = await redis.xreadgroup(group, consumer, {stream: cursor}, count=BATCH, block=block)
        entries = reply[0][1] if reply else []
        for entry_id, fields in entries:
            _print(fields)
            await redis.xack(stream, group, entry_id)
        if not entries:
            if cursor == "0":
                cursor = ">"
                continue
            if not follow:
                return


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    async with client.connect(settings) as redis:
        if args.group:
            await _group(redis, settings.events_stream, args.group, args.consumer, args.follow)
        else:
            await _plain(redis, settings.events_stream, args.follow)
    return client.EXIT_VALID


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.consumer and not args.group:
        raise client.ClientError("--consumer needs --group")
    args.consumer = args.consumer or socket.gethostname()
    return asyncio.run(_run(args, settings))


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("events", help="print result events from the stream")
    parser.add_argument("--follow", action="store_true", help="keep waiting for new events")
    parser.add_argument("--group", metavar="NAME", help="read as this consumer group, acknowledging")
    parser.add_argument("--consumer", metavar="NAME", help="consumer name in the group (default: host name)")
    parser.set_defaults(handler=run)
