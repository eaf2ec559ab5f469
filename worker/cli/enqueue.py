"""`inboxcheck enqueue`: put one request (--request) or a file of them (--requests) on the queue."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from jobs.request import parse_request
from jobs.result import ValidationResult
from jobs.time_units import SECONDS_PER_DAY
from worker.cli import client
from worker.cli.bulk_file import read_rows
from worker.cli.terminal_text import plain
from worker.messages import producer
from worker.messages.events import Rejection, TerminalEvent
from worker.messages.sealing import sealer_for
from worker.settings import Settings

# Bulk enqueueing waits for the events this long unless --wait says otherwise.
BULK_WAIT_DEFAULT_S = 600.0
# How often bulk waiting collects finished results.
BULK_POLL_S = 0.2


def _print_event_human(event: TerminalEvent, console: Console) -> None:
    data = event.data
    subject = event.subject or data.inbox_id or "?"
    if isinstance(data, ValidationResult) and data.status == "valid":
        console.print(
            Text.assemble(
                ("VALID", "bold green"),
                " ",
                plain(f"{subject}: recommended daily limit {data.recommended_daily_limit}"),
            ),
            highlight=False,
        )
    else:
        console.print(
            Text.assemble(
                (data.status.upper(), "bold red"),
                " ",
                plain(f"{subject}: {client.outcome(event)} (after {data.attempts} attempt(s))"),
            ),
            highlight=False,
        )
        if data.resolution:
            console.print(plain(f"What to do: {data.resolution}"), highlight=False)
        for problem in data.problems if isinstance(data, Rejection) else []:
            console.print(plain(f"  {problem}"), highlight=False)


async def _one(args: argparse.Namespace, settings: Settings) -> int:
    request = parse_request(client.read_source(args.request))
    async with client.connect(settings) as redis:
        job_id = await producer.enqueue_validation(redis, request, settings=settings)
        if args.wait is None:
            print(producer.event_line({"job_id": job_id}) if args.json else f"enqueued job {job_id}")
            return client.EXIT_VALID
        event = await producer.wait_for_event(redis, job_id, args.wait)
    if event is None:
        print(
            f"inboxcheck: no event for job {job_id} within {args.wait:g} s; it is still queued "
            "or running (is a worker up?)",
            file=sys.stderr,
        )
        return client.EXIT_PENDING
    if args.json:
        print(producer.event_line(event))
    else:
        _print_event_human(event, Console())
    return client.exit_code(event)


def _summary(events: dict[str, TerminalEvent], pending: int, bad: int) -> Table:
    table = Table(title="inboxcheck enqueue: outcomes")
    table.add_column("outcome")
    table.add_column("inboxes", justify="right")
    for label, count in sorted(Counter(client.outcome(e) for e in events.values()).items()):
        table.add_row(label, str(count))
    if pending:
        table.add_row("no event yet", str(pending))
    if bad:
        table.add_row("bad rows (not enqueued)", str(bad))
    return table


async def _collect(redis: Any, job_ids: list[str], wait_s: float, on_event: Any) -> dict[str, TerminalEvent]:
    done: dict[str, TerminalEvent] = {}
    deadline = time.monotonic() + wait_s
    while len(done) < len(job_ids):
        waiting = [job_id for job_id in job_ids if job_id not in done]
        for job_id, event in (await producer.results(redis, waiting)).items():
            done[job_id] = event
            on_event(event)
        if len(done) == len(job_ids) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(BULK_POLL_S)
    return done


async def _bulk(args: argparse.Namespace, settings: Settings) -> int:
    rows = read_rows(Path(args.requests), client.read_source(args.requests, "--requests"))
    for bad in rows.bad:
        print(f"inboxcheck: {args.requests}: {bad}", file=sys.stderr)
    sealer = sealer_for(settings.secret_key)
    async with client.connect(settings) as redis:
        job_ids: list[str] = []
        for _, request in rows.requests:
            job_id = await producer.enqueue_validation(redis, request, settings=settings, sealer=sealer)
            if job_id not in job_ids:  # the same row twice is one job
                job_ids.append(job_id)
        wait_s = BULK_WAIT_DEFAULT_S if args.wait is None else args.wait
        console = Console(stderr=True)
        if args.json:
            done = await _collect(redis, job_ids, wait_s, lambda e: print(producer.event_line(e), flush=True))
        else:
            with Progress(
                TextColumn("checking inboxes"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                disable=not console.is_terminal,
            ) as bar:
                task = bar.add_task("checks", total=len(job_ids))
                done = await _collect(redis, job_ids, wait_s, lambda _e: bar.advance(task))
    pending = len(job_ids) - len(done)
    if not args.json:
        Console().print(_summary(done, pending, len(rows.bad)))
    if pending:
        print(f"inboxcheck: {pending} job(s) had no event within {wait_s:g} s", file=sys.stderr)
    codes = [client.exit_code(e) for e in done.values()]
    if rows.bad or client.EXIT_USAGE in codes:
        return client.EXIT_USAGE
    if pending:
        return client.EXIT_PENDING
    return max(codes, default=client.EXIT_VALID)


def run(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_bulk(args, settings) if args.requests else _one(args, settings))


# Waiting for events of a bulk enqueue can reasonably take hours, not more than a day.
MAX_WAIT_S = float(SECONDS_PER_DAY)


def wait_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= MAX_WAIT_S:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_WAIT_S:g} seconds")
    return value


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("enqueue", help="queue checks for the workers")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--request", metavar="FILE", help="one request as JSON (- for stdin)")
    source.add_argument(
        "--requests", metavar="FILE", help="many requests: JSON lines, or CSV with the request's field names"
    )
    parser.add_argument(
        "--wait",
        type=wait_seconds,
        metavar="SECONDS",
        help=f"wait this long for the event(s) (--requests: default {BULK_WAIT_DEFAULT_S:g})",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON: the job id, or the event(s), one per line"
    )
    parser.set_defaults(handler=run)
