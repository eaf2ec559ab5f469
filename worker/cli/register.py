"""`inboxcheck register --request FILE [--every 6h]`: recheck an inbox on a schedule."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from jobs.request import parse_request
from worker.cli import client
from worker.rechecks.registry import Registry, for_settings
from worker.rechecks.settings import parse_duration
from worker.settings import Settings


def duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < 1:
        raise argparse.ArgumentTypeError("must be at least 1 second")
    return seconds


async def _register(args: argparse.Namespace, settings: Settings) -> int:
    request = parse_request(client.read_source(args.request))
    every = args.every if args.every is not None else settings.recheck_every
    async with client.connect(settings) as redis:
        registry: Registry = for_settings(redis, settings)
        row = await registry.register(request, every, spread_s=settings.recheck_spread)
    if args.json:
        print(json.dumps(row.as_dict()))
    else:
        print(
            f"registered {row.inbox_id}: rechecked every {every:g} s, first check within "
            f"{min(settings.recheck_spread, every):g} s"
        )
    return client.EXIT_VALID


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_register(args, settings))


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "register", help="recheck an inbox on a schedule (credentials stored sealed)"
    )
    parser.add_argument("--request", metavar="FILE", required=True, help="request JSON file, or - for stdin")
    parser.add_argument(
        "--every",
        type=duration,
        metavar="DURATION",
        help="recheck interval, e.g. 6h, 30m, 1d (default INBOXCHECK_RECHECK_EVERY)",
    )
    parser.add_argument("--json", action="store_true", help="print the registered inbox as JSON")
    parser.set_defaults(handler=run)
