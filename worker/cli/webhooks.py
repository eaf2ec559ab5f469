"""`inboxcheck webhooks`: run the webhook delivery process (see worker.webhooks.process)."""

from __future__ import annotations

import argparse
from typing import Any

from worker.settings import Settings
from worker.webhooks.process import run_webhooks


def run(_args: argparse.Namespace, settings: Settings) -> int:
    return run_webhooks(settings)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "webhooks", help="run webhook delivery: POST the events to the endpoints, signed"
    )
    parser.set_defaults(handler=run)
