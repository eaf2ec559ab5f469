"""`inboxcheck worker`: run the worker (see worker.runtime.supervisor)."""

from __future__ import annotations

import argparse
from typing import Any

from worker.runtime.supervisor import run_worker
from worker.settings import Settings


def run(_args: argparse.Namespace, settings: Settings) -> int:
    return run_worker(settings)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("worker", help="run a worker: take checks from the queue, write events")
    parser.set_defaults(handler=run)
