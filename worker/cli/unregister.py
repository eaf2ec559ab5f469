"""`inboxcheck unregister INBOX_ID`: stop rechecking an inbox and drop its stored credentials."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from worker.cli import client
from worker.rechecks.registry import for_settings
from worker.settings import Settings


async def _unregister(args: argparse.Namespace, settings: Settings) -> int:
    async with client.connect(settings) as redis:
        existed = await for_settings(redis, settings).unregister(args.inbox_id)
    if not existed:
        print(f"inboxcheck: {args.inbox_id} is not registered", file=sys.stderr)
        return client.EXIT_INVALID
    print(f"unregistered {args.inbox_id}")
    return client.EXIT_VALID


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_unregister(args, settings))


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("unregister", help="stop rechecking an inbox")
    parser.add_argument("inbox_id", metavar="INBOX_ID")
    parser.set_defaults(handler=run)
