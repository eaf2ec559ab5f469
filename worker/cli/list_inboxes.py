"""`inboxcheck list [--json] [--page N [--cursor C]]`: registered inboxes, their health and schedule.

With --page, one page of about N inboxes and, on stderr, the command for the next page: each
page costs Redis what it returns, however many inboxes are registered."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
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


def count(text: str) -> int:
    """A whole number of at least 1, or argparse's own clear error."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def cursor(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a cursor printed by a previous page")
    return int(text)


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    async with client.connect(settings) as redis:
        registry = for_settings(redis, settings)
        if args.page is None:
            rows = await registry.list_inboxes()
        else:
            rows, next_cursor = await registry.list_page(args.cursor, args.page)
            if next_cursor:
                next_page = f"inboxcheck list --page {args.page} --cursor {next_cursor}"
                print(f"next page: {next_page}", file=sys.stderr)
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
    parser.add_argument(
        "--page",
        type=count,
        metavar="N",
        help="one page of about N inboxes, in no set order; the next page's command goes to stderr",
    )
    parser.add_argument(
        "--cursor", type=cursor, default=0, help="where the page starts: the cursor a previous page printed"
    )
    parser.set_defaults(handler=run)
