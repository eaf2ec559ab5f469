"""`inboxcheck schema request|event|payload`: JSON Schemas for producers and consumers."""

from __future__ import annotations

import argparse
import json
from typing import Any

from jobs.request import ValidationRequest
from worker.messages import events
from worker.messages.payload import JobPayload

SCHEMAS = {
    "request": lambda: ValidationRequest.model_json_schema(mode="validation"),
    "event": events.json_schema,
    "payload": lambda: JobPayload.model_json_schema(mode="validation"),
}


def run(args: argparse.Namespace, _settings: Any) -> int:
    print(json.dumps(SCHEMAS[args.which](), indent=2))
    return 0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("schema", help="print a JSON Schema")
    parser.add_argument(
        "which",
        choices=sorted(SCHEMAS),
        help="request (what to check), event (what comes back), payload (the job's argument)",
    )
    parser.set_defaults(handler=run, needs_settings=False)
