"""`inboxcheck list [--json]`: registered inboxes, their health and schedule."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from worker.cli import client
from worker.cli.terminal_text import plain
from worker.rechecks.registry import InboxRow, for_settings
from worker.settings import Settings

HEALTH_STYLE = {"healthy": "green", "degraded": "yellow", "failing": "bold red", "pending": "dim"}


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def table(rows: list[InboxRow]) -> Table:
    out = Table(title=f"inboxcheck: {len(rows)} registered inbox(es)")
    for name in ("inbox", "health", "last checked (UTC)", "next check (UTC)", "last error"):
        out.add_column(name)
    for row in rows:
        error = f"{row.error_code} / {row.reason}" if row.error_code else "-"
        style = HEALTH_STYLE.get(row.health, "")
        out.add_row(
            plain(row.inbox_id),
            plain(row.health, style),
            _when(row.last_checked_at),
            _when(row.next_check_at),
            plain(error),
        )
    return out


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    async with client.connect(settings) as redis:
        rows = await for_settings(redis, settings).list_inboxes()
    if args.json:
        print(json.dumps([row.as_dict() for row in rows]))
    else:
        Console().print(table(rows))
    return client.EXIT_VALID


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_list(args, settings))


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("list", help="registered inboxes: health, last and next check, last error")
    parser.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    parser.set_defaults(handler=run)
